"""The Check panel: what `check()` shows under a test cell, and the course map of `show_progress()`.

One display carries three renderings at once (a mimebundle): the ipywidgets view, static HTML and plain text.
JupyterLab renders the widget; nbclient, nbconvert and nbgrader keep the HTML and the text. Nothing is written to
stderr. Where nbgrader executes a notebook itself (NBGRADER_EXECUTION is set: `nbgrader validate`, or an
autograde configured with nbgrader's own Execute) no widget is created at all, so there is no widget comm to close
mid-grading (jupyter/nbgrader#1359, "Error: closed").
"""
from __future__ import annotations

import html
import os
import time
from collections.abc import Callable

from autograder._result import PASSED, CheckResult

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widgets_wanted() -> bool:
    """Whether to create widgets: not under nbgrader's own execution, not when CLASH_NO_WIDGETS is set."""
    if os.environ.get("NBGRADER_EXECUTION") or os.environ.get("CLASH_NO_WIDGETS"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _hints_html(result: CheckResult) -> str:
    parts = [p for p in result.parts if not p.passed] or list(result.parts)
    return "".join(f"<div class='clash-hint-text' style='margin:2px 0'><b>{html.escape(p.id)}</b>: "
                   + (f"{html.escape(p.concept)}<br><i>The API:</i> " if p.concept else "")
                   + f"{html.escape(p.hint)}</div>" for p in parts if p.hint)


class CheckPanel:
    """An ipywidgets panel over a CheckResult: the per-part table, a Hint button and a Re-check button."""

    def __init__(self, result: CheckResult, recheck: Callable[[], CheckResult] | None = None):
        import ipywidgets as w

        self._recheck = recheck
        self.result = result
        self.body = w.HTML()
        self.hints = w.HTML(layout=w.Layout(display="none"))
        self.hint_button = w.Button(description="Hint", icon="lightbulb-o", tooltip="Show the hint",
                                    layout=w.Layout(width="auto"))
        self.recheck_button = w.Button(description="Re-check", icon="refresh", layout=w.Layout(width="auto"),
                                       tooltip="Check again with the code this kernel has run now",
                                       disabled=recheck is None)
        self.status = w.HTML()
        self.hint_button.on_click(self._toggle_hint)
        self.recheck_button.on_click(self._on_recheck)
        buttons = w.HBox([self.hint_button, self.recheck_button, self.status],
                         layout=w.Layout(align_items="center", grid_gap="6px"))
        self.widget = w.VBox([self.body, buttons, self.hints],
                             layout=w.Layout(border="1px solid #d0d7de", padding="6px", margin="4px 0"))
        self.widget.add_class("clash-panel")
        self._show(result)

    def _show(self, result: CheckResult) -> None:
        self.result = result
        self.body.value = result.to_html(hints=False)
        self.hints.value = _hints_html(result)
        self.widget.remove_class("clash-passed")
        self.widget.remove_class("clash-failed")
        self.widget.add_class("clash-passed" if result.passed else "clash-failed")

    def _toggle_hint(self, _button=None) -> None:
        shown = self.hints.layout.display != "none"
        self.hints.layout.display = "none" if shown else "block"
        self.hint_button.description = "Hint" if shown else "Hide hint"

    def _on_recheck(self, _button=None) -> None:
        # Runs in the kernel (a comm message handler): every failure must end in the panel, never as a traceback.
        self.recheck_button.disabled = True
        self.status.value = "<i>checking…</i>"
        try:
            result = self._recheck()
        except Exception as e:
            self.status.value = f"<span style='color:#cf222e'>could not check: {html.escape(str(e))}</span>"
        else:
            self._show(result)
            self.status.value = (f"<small>re-checked at {time.strftime('%H:%M:%S')}: "
                                 f"{result.score:g}/{result.max_score:g} points</small>")
        finally:
            self.recheck_button.disabled = False


def bundle(result: CheckResult, recheck: Callable[[], CheckResult] | None = None) -> tuple[dict, CheckPanel | None]:
    """The mimebundle that shows `result`: widget view (when wanted), HTML and text."""
    data = {"text/html": result.to_html(), "text/plain": result.summary()}
    panel = None
    if widgets_wanted():
        panel = CheckPanel(result, recheck)
        view = panel.widget._repr_mimebundle_()
        if view and WIDGET_MIME in view:
            data[WIDGET_MIME] = view[WIDGET_MIME]
    return data, panel


def show(result: CheckResult, recheck: Callable[[], CheckResult] | None = None) -> CheckPanel | None:
    from IPython.display import display

    data, panel = bundle(result, recheck)
    display(data, raw=True)
    return panel


# -- the course map ----------------------------------------------------------------------------------------
_STATUS_COLOURS = {"done": "#1a7f37", "started": "#9a6700", "not started": "#57606a"}


class CourseMap:
    """Every registered module with its lessons (links), exercise status and points, from the progress file."""

    def __init__(self, course, progress: dict, base: str | None = None):
        self.course, self.progress = course, progress
        self.base = base if base is not None else os.getcwd()

    def _link(self, path) -> str:
        return os.path.relpath(path, self.base)

    def rows(self):
        from autograder._progress import exercise_status
        for m in self.course.modules:
            status, points = exercise_status(self.progress.get(m.id), m.exercise)
            parts = self.progress.get(m.id, {}).get("parts", {})
            yield m, status, points, parts

    def _repr_html_(self) -> str:
        esc = html.escape
        total = sum(m.exercise.max_score for m in self.course.modules)
        earned = 0.0
        body = []
        for m, status, points, parts in self.rows():
            earned += points
            lessons = " · ".join(f"<a href='{esc(self._link(path))}'>{'PyTorch' if fw == 'torch' else 'TensorFlow'}</a>"
                                 for fw, path in m.lessons.items())
            marks = "".join(f"<span title='{esc(p.id)}: {esc(parts.get(p.id, 'not checked'))}' style='color:"
                            f"{'#1a7f37' if parts.get(p.id) == PASSED else '#cf222e' if p.id in parts else '#8c959f'}'>"
                            f"{'●' if parts.get(p.id) == PASSED else '○'}</span>" for p in m.exercise.parts)
            body.append(
                f"<tr class='clash-module'><td style='padding:3px 8px'><b>{esc(m.id)}</b><br>"
                f"<small>{esc(m.title)}</small></td>"
                f"<td style='padding:3px 8px'>{lessons}</td>"
                f"<td style='padding:3px 8px'>"
                f"<a href='{esc(self._link(m.exercise_notebook))}'>{esc(m.exercise.title)}</a>"
                f"<br>{marks}</td>"
                f"<td style='padding:3px 8px;color:{_STATUS_COLOURS[status]};font-weight:bold'>{esc(status)}</td>"
                f"<td style='padding:3px 8px;white-space:nowrap'>{points:g}/{m.exercise.max_score:g}</td></tr>")
        pct = 100 * earned / total if total else 0
        bar = (f"<div style='display:inline-block;width:200px;height:10px;background:#eaeef2;vertical-align:middle'>"
               f"<div style='width:{pct:.0f}%;height:10px;background:#1a7f37'></div></div>")
        head = "".join(f"<th style='text-align:left;padding:3px 8px'>{h}</th>"
                       for h in ("module", "lessons", "exercise", "status", "points"))
        return (f"<div class='clash-map'><h3 style='margin:0 0 4px'>{esc(self.course.title)}</h3>"
                f"<div>{bar} {earned:g}/{total:g} points ({pct:.0f}%)</div>"
                f"<table style='border-collapse:collapse;margin-top:6px'><tr>{head}</tr>{''.join(body)}</table></div>")

    def __repr__(self) -> str:
        lines = [self.course.title]
        for m, status, points, _ in self.rows():
            lines.append(f"  {m.id:<18} {status:<12} {points:g}/{m.exercise.max_score:g}  {m.exercise.title}")
            for fw, path in m.lessons.items():
                lines.append(f"      {'PyTorch' if fw == 'torch' else 'TensorFlow':<11} {self._link(path)}")
            lines.append(f"      exercise    {self._link(m.exercise_notebook)}")
        return "\n".join(lines)


def show_progress(course=None) -> None:
    """In a notebook: the course map (every module, its lesson links, exercise status and points), read from the
    same progress file as `clash`. Outside a notebook: print it."""
    from autograder._progress import load_progress
    from autograder._registry import load_course

    course = course or load_course()
    course_map = CourseMap(course, load_progress(course.root))
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None:
        print(repr(course_map))
        return None
    from IPython.display import display
    display(course_map)
    return None
