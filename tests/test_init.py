"""`clash init` (issue 15): a plain `pip install` of the built wheel, then `clash init`, gives a student's copy of
the course (lessons, exercises, course.toml, no solutions) in which `clash` works; the editable checkout keeps
working for instructors."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from autograder._init import init_course, student_files
from autograder.cli import main

from conftest import ROOT, notebook_with


def test_init_copies_the_student_files_and_no_solution(course, tmp_path, monkeypatch):
    dest = tmp_path / "mine"
    written = init_course(dest, source=ROOT)
    assert sorted(p.relative_to(dest) for p in written) == sorted(student_files(ROOT))
    assert (dest / "course.toml").read_text() == (ROOT / "course.toml").read_text()
    for module in course.modules:
        assert (dest / module.exercise_notebook.relative_to(ROOT)).is_file()
        assert all((dest / p.relative_to(ROOT)).is_file() for p in module.lessons.values())
    assert not (dest / "solutions").exists() and not list(dest.rglob("*solution*"))
    monkeypatch.chdir(dest)
    out = CliRunner().invoke(main, ["list"])
    assert out.exit_code == 0 and "01_tensors" in out.output and "09_capstone" in out.output, out.output
    again = CliRunner().invoke(main, ["init", str(dest)])
    assert again.exit_code == 2 and "already holds a course" in again.output and "kept" in again.output


def test_the_wheel_carries_every_registered_module():
    """pyproject's data-files table lists each module's lessons and exercise: a module added to course.toml but not
    there would be missing from every student's copy."""
    import tomllib
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {Path(dest).relative_to("share/clash-of-frameworks") / Path(src).name
               for dest, sources in table.items() for pattern in sources for src in ROOT.glob(pattern)}
    assert shipped == set(student_files(ROOT)) | {Path("LICENSE")}


@pytest.mark.slow
def test_a_pip_installed_wheel_inits_lists_and_checks(course, tmp_path):
    """The built wheel, installed (not editable) in a scratch venv that borrows this venv's libraries: `clash init`,
    `clash list`, and `clash check 01_tensors` on the copy with the answers filled in, which passes every part
    with no solutions anywhere in reach."""
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("clash_of_frameworks-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # torch, TensorFlow and the rest come from this venv (a plain path: its editable install's hook is not run).
    (site / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # As a student runs it: no course root or progress folder set from outside.
    env = {k: v for k, v in os.environ.items() if k not in ("CLASH_ROOT", "CLASH_PROGRESS_DIR", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = subprocess.run([py, "-c", "import autograder; print(autograder.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(site)), f"the scratch venv imported {where}"

    def clash(*args, cwd):
        return subprocess.run([venv / "bin" / "clash", *args], capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=600)

    made = clash("init", "course", cwd=tmp_path)
    assert made.returncode == 0 and "Next: cd course && clash" in made.stdout, made.stdout + made.stderr
    copy = tmp_path / "course"
    assert (copy / "exercises" / "01_tensors" / "01_tensors.ipynb").is_file() and not (copy / "solutions").exists()
    listed = clash("list", cwd=copy)
    assert listed.returncode == 0 and "01_tensors" in listed.stdout, listed.stdout + listed.stderr
    answers = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"])
               for c in json.loads(course.module("01_tensors").solution.read_text())["cells"]
               if c["metadata"].get("nbgrader", {}).get("solution")}
    exercise = copy / "exercises" / "01_tensors" / "01_tensors.ipynb"
    notebook_with(exercise, answers, exercise)
    checked = clash("check", "01_tensors", "--json", cwd=copy)
    result = json.loads(checked.stdout)
    assert checked.returncode == 0, [(p["id"], p["message"]) for p in result["parts"]]
    assert result["progress"]["recorded"], result["progress"]
    assert "01_tensors" in json.loads((copy / ".clash" / "progress.json").read_text())["exercises"]
