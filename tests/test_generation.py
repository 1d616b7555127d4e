"""exercises/ is generated from solutions/ by nbgrader, never edited by hand."""
import json
import shutil
import subprocess
import sys

from conftest import ROOT


def test_committed_exercises_equal_a_fresh_generation(course, tmp_path):
    for name in ("solutions", "nbgrader_config.py", "course.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    for m in course.modules:
        run = subprocess.run([*nbgrader, "generate_assignment", m.id, "--force"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        fresh = json.loads((tmp_path / "exercises" / m.id / f"{m.id}.ipynb").read_text())
        committed = json.loads(m.exercise_notebook.read_text())
        assert committed == fresh, f"{m.exercise_notebook} is stale: run `nbgrader generate_assignment {m.id} --force`"


def test_exercises_hold_no_solution_code(course):
    for m in course.modules:
        text = m.exercise_notebook.read_text()
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
