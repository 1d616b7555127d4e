"""check() in a kernel: it grades what the kernel ran (not the file on disk), shows HTML, writes no stderr,
and a failing part fails its cell the way nbgrader expects."""
import json

import nbformat
import pytest

from headless import run_notebook as execute

pytestmark = pytest.mark.slow


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


def test_each_test_cell_checks_only_its_part_and_reuses_a_run_until_the_code_changes(course, monkeypatch):
    """Under Run All the code changes before every test cell: checking the whole exercise each time would
    repeat every earlier part (quadratic in the number of parts)."""
    from autograder import _notebook
    from autograder._result import CheckResult, PartResult

    module = course.module("01_tensors")
    ids = [p.id for p in module.exercise.parts]
    runs, code = [], ["x = 1"]

    def fake_run_check(target, **kwargs):
        runs.append(target)
        wanted = ids if "." not in target else [target.split(".", 1)[1]]
        return CheckResult(exercise=module.id, title="t", device="cpu", parts=[
            PartResult(id=i, title=i, status="passed", points=1, max_points=1, message="", hint="", framework="torch",
                       kind="equivalence") for i in wanted])

    monkeypatch.setattr(_notebook, "run_check", fake_run_check)
    monkeypatch.setattr(_notebook, "record", lambda root, result: None)
    monkeypatch.setattr(_notebook, "_zygote", lambda device: None)
    monkeypatch.setattr(_notebook, "kernel_sources", lambda: [("In [1]", code[0])])
    monkeypatch.setattr(_notebook, "_cache", {})

    def checked(target):
        return [p.id for p in _notebook._checked(target, "auto", "both").parts]

    assert checked(f"{module.id}.{ids[0]}") == [ids[0]] and runs == [f"{module.id}.{ids[0]}"]
    assert checked(f"{module.id}.{ids[0]}") == [ids[0]] and len(runs) == 1          # the same code: no new run
    assert checked(f"{module.id}.{ids[1]}") == [ids[1]] and runs[-1] == f"{module.id}.{ids[1]}"
    assert checked(f"{module.id}.{ids[0]}") == [ids[0]] and len(runs) == 2          # both kept
    assert checked(module.id) == ids and runs[-1] == module.id                      # the whole exercise
    code[0] = "x = 2"
    assert checked(f"{module.id}.{ids[1]}") == [ids[1]] and runs[-1] == f"{module.id}.{ids[1]}" and len(runs) == 4
