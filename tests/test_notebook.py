"""check() in a kernel: it grades what the kernel ran (not the file on disk), shows HTML, writes no stderr,
and a failing part fails its cell the way nbgrader expects."""
import json

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


def execute(nb, path, allow_errors=False):
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(path)}}).execute()
    return nb


def grade_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def test_check_grades_the_kernels_code_not_the_saved_file(course, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    module = course.module("01_tensors")
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source
              for c in nbformat.read(module.solution, 4).cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(module.exercise_notebook, 4)  # on disk this notebook stays untouched
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in solved:
            cell.source = solved[gid]
    execute(nb, module.exercise_notebook.parent)
    for cell in grade_cells(nb):
        kinds = [o.output_type for o in cell.outputs]
        assert "error" not in kinds and not any(o.get("name") == "stderr" for o in cell.outputs), cell.outputs
        html = [o for o in cell.outputs if "text/html" in o.get("data", {})]
        assert html and "passed" in html[0]["data"]["text/html"]
    progress = json.loads((tmp_path / "progress.json").read_text())["exercises"]["01_tensors"]["parts"]
    assert set(progress.values()) == {"passed"}


def test_an_untouched_exercise_fails_each_grade_cell_with_one_line(course, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    module = course.module("01_tensors")
    nb = execute(nbformat.read(module.exercise_notebook, 4), module.exercise_notebook.parent, allow_errors=True)
    for cell in grade_cells(nb):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1 and errors[0].ename == "CheckFailed", cell.outputs
        assert len(errors[0].traceback) == 1 and "not written yet" in errors[0].traceback[0] \
            or "is not defined" in errors[0].traceback[0]
        assert not any(o.get("name") == "stderr" for o in cell.outputs)
