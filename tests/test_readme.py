"""The README's commands are the ones that work: the instructor block runs verbatim on a synthetic class."""
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request

import pytest

from classroom import WRONG_TORCH, make_course, submit, with_solution
from conftest import ROOT

pytestmark = pytest.mark.slow


def readme_block(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(re.escape(marker) + r".*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_instructor_section_works_verbatim(tmp_path):
    course = make_course(tmp_path)
    submit(course, "ada", with_solution())
    submit(course, "bo", with_solution(torch_loss_and_grad=WRONG_TORCH))
    submit(course, "cy")
    submit(course, "dee", raw="{not json")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    outputs = {}
    for line in readme_block("instructor-commands"):
        run = subprocess.run(shlex.split(line), cwd=course, capture_output=True, text=True, timeout=900, env=env)
        # nbgrader autograde and clash grade grade the rest, then exit 1 over dee's unreadable notebook (as the README
        # says)
        nbgrader_exit_for_dee = line.startswith("nbgrader autograde") and run.returncode == 1 and "'dee'" in run.stderr
        clash_exit_for_dee = line.startswith("clash grade") and run.returncode == 1 and "1 failed" in run.stdout
        assert run.returncode == 0 or nbgrader_exit_for_dee or clash_exit_for_dee, \
            f"{line}: {run.stdout[-2000:]} {run.stderr[-2000:]}"
        outputs[line.split()[1] if line.startswith("nbgrader") else line] = run.stdout
    grades = (course / "grades.csv").read_text()
    assert ",ada," in grades and ",bo," in grades
    assert (course / "feedback" / "bo" / "01_tensors" / "01_tensors.html").is_file()
    report = outputs["clash report 01_tensors"]
    assert re.search(r"ada\s+graded\s+10/10", report) and re.search(r"bo\s+graded\s+6/10", report)
    assert re.search(r"cy\s+graded\s+0/10", report)
    assert re.search(r"dee\s+failed\s+-\s+malformed notebook: .*not valid notebook JSON", report)
    assert "dee" in outputs["clash grade 01_tensors --workers 2"] and "malformed notebook" in \
        outputs["clash grade 01_tensors --workers 2"].replace("\n", " ")


def test_the_formgrader_serves_the_course(tmp_path):
    course = make_course(tmp_path)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "clash-test-token"
    args = [sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={course}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    server = subprocess.Popen(args, cwd=course, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/formgrader/api/assignments?token={token}"
        deadline, body = time.monotonic() + 90, ""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert '"01_tensors"' in body, body[:500]
    finally:
        server.terminate()
        server.wait(timeout=30)
