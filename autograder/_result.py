"""The result of one check: the same object for the CLI, the notebook and nbgrader, in text, HTML or JSON."""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field, replace

# A part's status. Only "passed" earns points; the others say why a part earned none.
PASSED, FAILED = "passed", "failed"
SKIPPED = "skipped"                  # left out by --framework
NEEDS_REFERENCE = "needs-reference"  # solutions/ is absent, and this part compares against the reference
NEEDS_GPU = "needs-gpu"
_MARKS = {PASSED: "✓", FAILED: "✗", SKIPPED: "–", NEEDS_REFERENCE: "?", NEEDS_GPU: "?"}
_COLOURS = {PASSED: "#1a7f37", FAILED: "#cf222e"}


@dataclass
class PartResult:
    id: str
    title: str
    status: str
    points: float
    max_points: float
    message: str
    hint: str
    framework: str
    kind: str
    details: dict = field(default_factory=dict)   # error statistics, timings and ratios: numbers to show
    concept: str = ""   # the first-level hint, the idea without the API; empty when `hint` targets a diagnosed failure

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class CheckResult:
    exercise: str
    title: str
    parts: list[PartResult]
    device: str
    notebook: str = ""
    seed: int | None = None
    frameworks: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)   # seconds: "total", "startup", and one per part
    isolation: str = ""                           # the protections in force around the student's code (_jail)
    isolation_missing: dict = field(default_factory=dict)   # those this machine could not enforce, with the reason
    error: str | None = None                      # the whole check could not run (bad notebook, timeout …)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.parts) and all(p.passed for p in self.parts)

    @property
    def score(self) -> float:
        return sum(p.points for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_points for p in self.parts)

    def only(self, part_ids) -> CheckResult:
        """The same result, narrowed to some parts (a test cell shows and asserts its own part)."""
        return replace(self, parts=[p for p in self.parts if p.id in part_ids])

    def first_failure(self) -> PartResult | None:
        return next((p for p in self.parts if not p.passed and p.status != SKIPPED), None)

    # -- renderings ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(passed=self.passed, score=self.score, max_score=self.max_score)
        for part, raw in zip(self.parts, d["parts"]):
            raw["passed"] = part.passed
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        head = f"{self.exercise} — {self.title}: {self.score:g}/{self.max_score:g} points on {self.device}"
        lines = [head]
        if self.error:
            lines.append(f"  could not check: {self.error}")
        for p in self.parts:
            lines.append(f"  {_MARKS.get(p.status, '?')} {p.id:<18} {p.points:g}/{p.max_points:g}  {p.message}")
            if part_details_text(p):
                lines.append(f"    {'':<18}        {part_details_text(p)}")
        nxt = self.first_failure()
        if nxt is not None and nxt.status == FAILED and not nxt.message.startswith("not checked:"):
            # A hint helps with a part that was checked: the idea first; `clash hint` names the API when asked again.
            lines.append(f"  hint ({nxt.id}): {nxt.concept} (`clash hint {self.exercise}.{nxt.id}` names the API)"
                         if nxt.concept else f"  hint ({nxt.id}): {nxt.hint}")
        return "\n".join(lines)

    __str__ = summary

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self, hints: bool = True) -> str:
        """Static HTML (nbconvert, nbgrader feedback, any front end without widgets): one row per part, with the
        error against the tolerance for equivalence parts and a bar chart of the timings for performance parts.
        `hints=False` leaves the hints out (the widget panel reveals them with its Hint button)."""
        esc = html.escape
        rows = []
        for p in self.parts:
            colour = _COLOURS.get(p.status, "#9a6700")
            idea = f"{esc(p.concept)}<br><i>The API:</i> " if p.concept else ""
            hint = (f"<details class='clash-hint'><summary>Hint</summary>{idea}{esc(p.hint)}</details>"
                    if hints and not p.passed and p.hint else "")
            rows.append(
                f"<tr class='clash-part clash-{esc(p.status)}'>"
                f"<td style='color:{colour};font-weight:bold;white-space:nowrap;padding:3px 8px'>"
                f"{_MARKS.get(p.status, '?')} {esc(p.status)}</td>"
                f"<td style='padding:3px 8px'><code>{esc(p.id)}</code><br><small>{esc(p.title)}</small></td>"
                f"<td style='white-space:nowrap;padding:3px 8px'>{p.points:g}/{p.max_points:g}</td>"
                f"<td style='padding:3px 8px'>{esc(p.message)}{part_details_html(p, self.device)}{hint}</td></tr>")
        error = f"<p style='color:#cf222e'>Could not check: {esc(self.error)}</p>" if self.error else ""
        colour = _COLOURS[PASSED] if self.passed else _COLOURS[FAILED]
        return (f"<div class='clash-result'><div><b>{esc(self.exercise)} — {esc(self.title)}</b>: "
                f"<b style='color:{colour}'>{self.score:g}/{self.max_score:g} points</b> · device "
                f"<b class='clash-device'>{esc(self.device)}</b></div>{error}"
                "<table style='border-collapse:collapse;margin-top:4px'>"
                "<tr><th style='text-align:left;padding:3px 8px'>"
                "status</th><th style='text-align:left;padding:3px 8px'>part</th>"
                "<th style='text-align:left;padding:3px 8px'>points</th>"
                "<th style='text-align:left;padding:3px 8px'>message</th></tr>"
                + "".join(rows) + "</table></div>")

    def __repr__(self) -> str:
        return self.summary()


def _bar(label: str, us: float, scale: float, colour: str) -> str:
    width = max(2, round(160 * us / scale)) if scale > 0 else 2
    return (f"<div style='display:flex;align-items:center;gap:6px;margin:1px 0'>"
            f"<span style='display:inline-block;width:7.5em'>{html.escape(label)}</span>"
            f"<span style='display:inline-block;background:{colour};width:{width}px;height:10px'></span>"
            f"<span>{us:,.1f} µs</span></div>")


def part_details_html(p: PartResult, device: str = "") -> str:
    """The numbers behind a part's verdict: error vs tolerance, or the two timings and the ratio vs threshold."""
    d = p.details
    if "ratio" in d and "baseline_us" in d and "fast_us" in d:
        scale = max(d["baseline_us"], d["fast_us"])
        threshold = d.get("threshold") or 0
        ok = d["ratio"] >= threshold
        return ("<div class='clash-timing' style='margin-top:4px;font-size:90%'>"
                + _bar("eager baseline", d["baseline_us"], scale, "#8c959f")
                + _bar("your version", d["fast_us"], scale, _COLOURS[PASSED] if ok else _COLOURS[FAILED])
                + f"<div>speed-up <b>{d['ratio']:.2f}×</b> {'≥' if ok else '<'} threshold {threshold:g}×"
                + (f" on {html.escape(device)}" if device else "") + f"{_both_clocks(d)}</div></div>")
    if "max_abs_err" in d:
        rel = f", max rel err {d['max_rel_err']:.3g}" if "max_rel_err" in d else ""
        tol = (f" against tolerance atol {d['atol']:g} + rtol {d['rtol']:g}·|expected|"
               if "atol" in d and "rtol" in d else "")
        return (f"<div class='clash-error' style='margin-top:2px'><small>max abs err {d['max_abs_err']:.3g}{rel}"
                f"{tol}</small></div>")
    return ""


def _both_clocks(d: dict) -> str:
    """Where the CPU-time ratio was measured too, the verdict took the smaller of the two: say both."""
    if "cpu_ratio" not in d or "wall_ratio" not in d:
        return ""
    return f"; the smaller of wall clock {d['wall_ratio']:.2f}× and CPU time {d['cpu_ratio']:.2f}×"


def part_details_text(p: PartResult) -> str:
    d = p.details
    if "ratio" in d and "baseline_us" in d and "fast_us" in d:
        return (f"eager {d['baseline_us']:,.1f} µs vs yours {d['fast_us']:,.1f} µs: {d['ratio']:.2f}× "
                f"(threshold {d.get('threshold') or 0:g}×){_both_clocks(d)}")
    if "max_abs_err" in d and not p.passed:
        return f"max abs err {d['max_abs_err']:.3g} (atol {d.get('atol', 0):g}, rtol {d.get('rtol', 0):g})"
    return ""
