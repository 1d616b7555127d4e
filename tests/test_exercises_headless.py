"""Every exercise, solved, runs headless (nbclient, as nbconvert and nbgrader run it): each check cell shows the
Check panel's HTML and text, passes, and writes nothing to stderr. Its own file, so that pytest-xdist runs it beside
tests/test_panel.py's nbgrader pipelines instead of after them."""
from __future__ import annotations

import nbformat
import pytest

from autograder._panel import WIDGET_MIME

from conftest import ROOT
from headless import run_notebook as execute


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


def stderr_outputs(nb):
    return [(i, o.get("text", "")[:300]) for i, c in enumerate(nb.cells, 1) for o in c.get("outputs", [])
            if o.get("name") == "stderr"]


def solved_exercise(module):
    """The student's exercise notebook with every solution cell filled in from the instructor's source."""
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(module.solution, 4).cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(module.exercise_notebook, 4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in solved:
            cell.source = solved[gid]
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_every_exercise_runs_headless_with_html_check_results_and_no_stderr(module, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    nb = execute(solved_exercise(module), module.exercise_notebook.parent, allow_errors=True)
    assert not stderr_outputs(nb)
    grade_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(grade_cells) == len(module.exercise.parts)
    assert not [o for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")
                for o in c.get("outputs", []) if o.output_type == "error"]
    for cell in grade_cells:
        part = module.exercise.part(cell.metadata["nbgrader"]["grade_id"].removeprefix("test_"))
        errors = [o for o in cell.outputs if o.output_type == "error"]
        shown = [o for o in cell.outputs if o.output_type == "display_data"]
        assert len(shown) == 1, cell.outputs
        data = shown[0]["data"]
        assert "clash-result" in data["text/html"] and part.id in data["text/plain"]
        assert WIDGET_MIME in data   # the panel, where a widget front end exists
        if part.kind == "performance" and errors:  # a timing on a loaded machine may miss: one line, no stderr
            assert errors[0].ename == "CheckFailed" and len(errors[0].traceback) == 1
            continue
        assert not errors and "✓ passed" in data["text/html"], (part.id, data["text/plain"])
