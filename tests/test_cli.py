"""The CLI is a thin layer: every command has help, and bad input is one line with exit code 2."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from autograder.cli import main

from conftest import ROOT


def test_every_command_has_help():
    runner = CliRunner()
    assert main.commands, "no commands"
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and command.help and len(result.output) > 50, name
    assert "course map" in runner.invoke(main, ["--help"]).output


@pytest.fixture
def isolated_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASH_PROGRESS_DIR", str(tmp_path))
    monkeypatch.chdir(ROOT)
    return tmp_path


def test_the_course_map_shows_modules_progress_and_the_next_step(isolated_progress):
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0
    assert "01_tensors" in result.output and "not started" in result.output
    assert "clash check 01_tensors" in result.output and "exercises/01_tensors/01_tensors.ipynb" in result.output


def test_list_hint_and_progress(isolated_progress):
    from autograder import load_course
    course = load_course()
    runner = CliRunner()
    listing = runner.invoke(main, ["list"]).output
    assert all(m.id in listing for m in course.modules)
    assert "0/10" in listing
    part = course.module("01_tensors").exercise.part("tf_grad")
    first = runner.invoke(main, ["hint", "01_tensors.tf_grad"]).output
    assert part.concept in first and "tape.watch" not in first and "ask again" in first, first
    second = runner.invoke(main, ["hint", "01_tensors.tf_grad"]).output
    assert "tape.watch(w)" in second, second
    assert "tape.watch(w)" in runner.invoke(main, ["hint", "01_tensors.tf_grad"]).output   # it stays at the API
    assert "tape.watch(w)" in runner.invoke(main, ["hint", "01_tensors.tf_grad", "--api"]).output
    total = sum(m.exercise.max_score for m in course.modules)
    assert f"0/{total:g} points" in runner.invoke(main, ["progress"]).output


@pytest.mark.parametrize("args,message", [
    (["check", "nope"], "clash: no exercise or part 'nope'"),
    (["check", "01_tensors", "--notebook", "missing.ipynb"], "missing.ipynb: no such notebook"),
    (["check", "01_tensors", "--device", "tpu"], "Invalid value for '--device'"),
    (["hint", "nope"], "clash: no exercise or part 'nope'"),
])
def test_bad_usage_exits_2_with_one_clear_line(isolated_progress, args, message):
    run = subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and message in run.stderr
    assert "Traceback" not in run.stderr


def test_malformed_notebook_json_is_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text('{"cells": [{"cell_type": "code", "source": "x = 1"')
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "check", "01_tensors", "--notebook", str(bad),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert json.loads(run.stdout)["error"].startswith(f"{bad}: not valid notebook JSON")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


@pytest.mark.slow
def test_watch_checks_again_when_the_notebook_is_saved(course, tmp_path):
    import queue
    import threading
    import time

    from conftest import notebook_with, processes_with

    module = course.module("01_tensors")
    nb = notebook_with(module.exercise_notebook, {}, tmp_path / "mine.ipynb")
    proc = subprocess.Popen([sys.executable, "-m", "autograder.cli", "watch", "01_tensors", "--notebook", str(nb),
                             "--framework", "torch"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for(text, seconds=120):
        deadline = time.monotonic() + seconds
        seen = []
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if text in seen[-1]:
                return
        raise AssertionError(f"never saw {text!r} in {''.join(seen)}")

    def zygotes() -> set[int]:
        """The watch's own zygote processes: children of it that serve forks."""
        found = set()
        for pid in processes_with("from autograder._zygote import _serve"):
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid:
                found.add(pid)
        return found

    try:
        wait_for("✗ torch_grad")
        wait_for("(checked in")
        warm = zygotes()
        assert len(warm) == 1, warm
        solved = {c["metadata"]["nbgrader"]["grade_id"]: c["source"]
                  for c in json.loads(module.solution.read_text())["cells"]
                  if c["metadata"].get("nbgrader", {}).get("grade_id") == "torch_loss_and_grad"}
        notebook_with(nb, solved, nb)  # the student saves a fix
        wait_for("Saved: checking again")
        wait_for("✓ torch_grad")
        # The re-check forked its workers from the same zygote: the frameworks were not imported again.
        assert zygotes() == warm
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    def running(pid: int) -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while any(running(pid) for pid in warm) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in warm), "the zygote outlived the watch"


def test_clash_lab_installs_settings_that_keep_the_panels_of_a_saved_notebook(tmp_path):
    from autograder.cli import LAB_OVERRIDES, install_lab_settings
    path = install_lab_settings(str(tmp_path))
    assert path == tmp_path / "share/jupyter/lab/settings/overrides.d/clash-of-frameworks.json"
    assert json.loads(path.read_text()) == LAB_OVERRIDES
    assert LAB_OVERRIDES["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        assert install_lab_settings(str(tmp_path / "ro")) is None


@pytest.mark.slow
@pytest.mark.parametrize("own", [True, False])
def test_check_says_whether_it_recorded_progress_and_where(isolated_progress, tmp_path, own):
    """A check of a notebook outside exercises/ recorded nothing and said nothing (issue 13); now it says which."""
    from autograder import load_course
    own_notebook = load_course().module("01_tensors").exercise_notebook
    notebook = own_notebook if own else tmp_path / "elsewhere.ipynb"
    if not own:
        notebook.write_bytes(own_notebook.read_bytes())
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "check", "01_tensors.torch_grad", "--framework",
                          "torch", "--notebook", str(notebook)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    recorded = (isolated_progress / "progress.json").is_file()
    assert recorded == own
    if own:
        assert f"Progress recorded in {isolated_progress / 'progress.json'}." in run.stdout
    else:
        assert "Progress not recorded:" in run.stdout and "exercises/01_tensors/01_tensors.ipynb" in run.stdout
