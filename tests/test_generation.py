"""exercises/ is generated from solutions/ by nbgrader, never edited by hand."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


@pytest.fixture(scope="module")
def fresh_generation(tmp_path_factory):
    """Every module's exercise, generated from a copy of solutions/ by one nbgrader run (an assignment id of `*`):
    one nbgrader start instead of one per module, 10 s each."""
    root = tmp_path_factory.mktemp("generated")
    for name in ("solutions", "nbgrader_config.py", "course.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--force"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return root / "exercises"


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_committed_exercise_equals_a_fresh_generation(module, fresh_generation):
    fresh = json.loads((fresh_generation / module.id / f"{module.id}.ipynb").read_text())
    committed = json.loads(module.exercise_notebook.read_text())
    assert committed == fresh, \
        f"{module.exercise_notebook} is stale: run `nbgrader generate_assignment {module.id} --force`"


def test_exercises_hold_no_solution_code(course):
    for m in course.modules:
        text = m.exercise_notebook.read_text()
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
