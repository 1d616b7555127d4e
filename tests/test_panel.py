"""The Check panel and the course map: widget, static HTML and text from one call; headless runs of every
exercise show HTML results and write no stderr (tests/test_exercises_headless.py); nbgrader scores notebooks that
show the panel; `clash lab`."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import nbformat
import pytest
from click.testing import CliRunner

from autograder._panel import WIDGET_MIME, CheckPanel, CourseMap, bundle
from autograder._result import CheckResult, PartResult

from conftest import ROOT
from headless import run_notebook as execute


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


def part(pid, status="passed", kind="equivalence", **details):
    return PartResult(id=pid, title=f"title of {pid}", status=status, points=2.0 if status == "passed" else 0.0,
                      max_points=2.0, message=f"message of {pid}", hint=f"hint of {pid}", framework="torch",
                      kind=kind, details=details)


def result(*parts):
    return CheckResult(exercise="01_tensors", title="One linear regression", parts=list(parts),
                       device="cpu (no GPU: CPU thresholds)")


SAMPLE = result(
    part("torch_grad", "failed", max_abs_err=0.25, max_rel_err=0.5, rtol=1e-4, atol=1e-5),
    part("graph_speed", "passed", kind="performance", baseline_us=900.0, fast_us=300.0, ratio=3.0, threshold=1.5),
)


def test_static_html_shows_each_part_error_vs_tolerance_timings_and_device():
    page = SAMPLE.to_html()
    assert page.count("class='clash-part") == 2
    assert "✗ failed" in page and "✓ passed" in page and "0/2" in page and "2/2" in page
    assert "max abs err 0.25" in page and "atol 1e-05 + rtol 0.0001" in page
    assert "clash-timing" in page and "900.0 µs" in page and "300.0 µs" in page
    assert "3.00×</b> ≥ threshold 1.5×" in page
    assert "cpu (no GPU: CPU thresholds)" in page
    assert "hint of torch_grad" in page and "hint of torch_grad" not in SAMPLE.to_html(hints=False)
    text = SAMPLE.summary()
    assert "eager 900.0 µs vs yours 300.0 µs: 3.00× (threshold 1.5×)" in text and "max abs err 0.25" in text


def test_one_display_carries_the_widget_html_and_text(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    data, panel = bundle(SAMPLE)
    assert {WIDGET_MIME, "text/html", "text/plain"} <= set(data)
    assert data["text/plain"] == SAMPLE.summary() and "clash-result" in data["text/html"]
    assert panel.widget.model_id == data[WIDGET_MIME]["model_id"]


@pytest.mark.parametrize("env", ["NBGRADER_EXECUTION", "CLASH_NO_WIDGETS"])
def test_no_widget_where_nbgrader_executes_the_notebook(monkeypatch, env):
    monkeypatch.setenv(env, "autograde")
    data, panel = bundle(SAMPLE)
    assert panel is None and set(data) == {"text/html", "text/plain"}


def test_hint_button_reveals_and_recheck_runs_again():
    fixed = result(part("torch_grad", "passed", max_abs_err=0.0, max_rel_err=0.0, rtol=1e-4, atol=1e-5))
    calls = []
    panel = CheckPanel(result(SAMPLE.parts[0]), recheck=lambda: calls.append(1) or fixed)
    assert panel.hints.layout.display == "none" and "hint of torch_grad" in panel.hints.value
    panel.hint_button.click()
    assert panel.hints.layout.display == "block" and panel.hint_button.description == "Hide hint"
    assert "✗ failed" in panel.body.value and "clash-failed" in panel.widget._dom_classes
    panel.recheck_button.click()
    assert calls == [1] and "✓ passed" in panel.body.value and "clash-passed" in panel.widget._dom_classes
    assert "re-checked at" in panel.status.value and not panel.recheck_button.disabled


def test_recheck_that_cannot_run_says_so_in_the_panel():
    def broken():
        raise RuntimeError("no reference worker")
    panel = CheckPanel(SAMPLE, recheck=broken)
    panel.recheck_button.click()
    assert "could not check: no reference worker" in panel.status.value


def test_the_course_map_lists_every_registered_module_from_the_progress_file(course, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    first = course.modules[0]
    from autograder._progress import load_progress, record
    record(course.root, CheckResult(exercise=first.id, title=first.exercise.title, device="cpu", parts=[
        part(p.id, "passed" if i == 0 else "failed") for i, p in enumerate(first.exercise.parts)]))
    course_map = CourseMap(course, load_progress(course.root), base=str(course.root))
    page, text = course_map._repr_html_(), repr(course_map)
    for m in course.modules:
        assert m.id in page and m.id in text
        for path in m.lessons.values():
            assert f"href='{path.relative_to(course.root)}'" in page
        assert f"href='{m.exercise_notebook.relative_to(course.root)}'" in page
    assert f"{first.exercise.parts[0].points:g}/{first.exercise.max_score:g}" in text and "started" in text


@pytest.mark.parametrize("euid,root_flag", [(0, True), (1000, False)])
def test_clash_lab_opens_jupyterlab_at_the_course_root_allow_root_only_for_root(course, euid, root_flag):
    from autograder.cli import lab_command
    cmd = lab_command(course.root, 8899, ("--no-browser",), euid=euid)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={course.root}" in cmd and "--port=8899" in cmd and cmd[-1] == "--no-browser"
    assert ("--allow-root" in cmd) is root_flag


def test_clash_lab_dry_run_prints_the_command_it_would_run(monkeypatch):
    from autograder.cli import main
    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(main, ["lab", "--dry-run", "--no-browser"]).output
    cmd = shlex.split(out)
    assert "jupyterlab" in cmd and "--no-browser" in cmd and ("--allow-root" in cmd) == (os.geteuid() == 0)


# -- headless runs: nbclient, nbconvert, nbgrader ----------------------------------------------------------------
def stderr_outputs(nb):
    return [(i, o.get("text", "")[:300]) for i, c in enumerate(nb.cells, 1) for o in c.get("outputs", [])
            if o.get("name") == "stderr"]


@pytest.mark.slow
def test_course_ipynb_shows_the_course_map_headless(course, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    nb = execute(nbformat.read(ROOT / "course.ipynb", 4), ROOT)
    assert not stderr_outputs(nb)
    page = "".join(o["data"].get("text/html", "") for c in nb.cells for o in c.get("outputs", []) if "data" in o)
    assert "clash-map" in page and all(m.id in page for m in course.modules)


def panel_outputs(nb_path):
    """A submission as JupyterLab saves it after the student ran the test cells: each shows the panel (widget
    view, HTML and text) and the notebook carries the widget state."""
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade"):
            cell["outputs"] = [{"output_type": "display_data", "metadata": {}, "data": {
                WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": "0123456789abcdef"},
                "text/html": SAMPLE.to_html(), "text/plain": SAMPLE.summary()}}]
            cell["execution_count"] = 1
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2,
                                                                               "version_minor": 0, "state": {}}}
    nb_path.write_text(json.dumps(nb, indent=1))


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["course", "nbgrader-execute"])
def test_nbgrader_autograde_scores_notebooks_that_show_the_panel(tmp_path, pipeline):
    """`course`: the course's config (ClashGrade decides every grade cell). `nbgrader-execute`: nbgrader's own
    pipeline, which runs the submission in a kernel, so `check()` itself runs under NBGRADER_EXECUTION: no widget
    is created (jupyter/nbgrader#1359), nothing goes to stderr, and a failing part's error output scores 0."""
    from classroom import WRONG_TORCH, gradebook_scores, make_course, submit, with_solution

    course = make_course(tmp_path)
    for student, answers in (("correct", with_solution()), ("wrong", with_solution(torch_loss_and_grad=WRONG_TORCH))):
        panel_outputs(submit(course, student, answers))
    if pipeline == "nbgrader-execute":
        config = (course / "nbgrader_config.py").read_text()
        config = config[:config.index("c.Autograde.autograde_preprocessors")]
        (course / "nbgrader_config.py").write_text(config + "c.Execute.timeout = 600\n")
    run = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "01_tensors"], cwd=course,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    # A performance part is a timing on a shared machine: under heavy load it may fail for anyone. Everything
    # else is exact, and the gradebook must agree with the outputs, cell by cell.
    scores = gradebook_scores(course)
    failed = {}
    for student in ("correct", "wrong"):
        graded = nbformat.read(course / "autograded" / student / "01_tensors" / "01_tensors.ipynb", 4)
        assert not stderr_outputs(graded)
        cells = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert not [o for c in cells for o in c.outputs if WIDGET_MIME in o.get("data", {})]
        failed[student] = {c.metadata["nbgrader"]["grade_id"] for c in cells
                           if any(o.output_type == "error" for o in c.outputs)}
        assert scores[student] == sum(c.metadata["nbgrader"]["points"] for c in cells
                                      if c.metadata["nbgrader"]["grade_id"] not in failed[student])
    assert failed["correct"] <= {"test_graph_speed"}
    assert {"test_torch_grad", "test_cross_grad"} <= failed["wrong"] <= {"test_torch_grad", "test_cross_grad",
                                                                         "test_graph_speed"}
