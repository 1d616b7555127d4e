"""Shared helpers: the course, and notebooks built from the solution with some cells replaced."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# nbgrader and the kernels find their tools (alembic, jupyter) next to this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests never touch the working copy's own progress file (the CLI records checks of exercises/ notebooks).
os.environ["CLASH_PROGRESS_DIR"] = tempfile.mkdtemp(prefix="clash-test-progress-")


@pytest.fixture(scope="session")
def zygote():
    """One process per pytest worker that imports torch and TensorFlow once and forks each check's workers, as a
    notebook kernel and `clash grade` do. The module tests pass it to run_check; the CLI tests (test_cli, and
    test_integrity's) start fresh interpreters, as `clash check` does."""
    from autograder._sandbox import worker_env
    from autograder._zygote import Zygote
    z = Zygote(["torch", "tensorflow"], worker_env("auto"))
    yield z
    z.close()


@pytest.fixture(scope="module", params=["fresh", "zygote"])
def launcher(request):
    """A worker's two ways to start, for the process-level tests (test_sandbox, test_jail): a fresh interpreter, or a
    fork of a zygote without frameworks. Every limit and every protection must hold for both."""
    if request.param == "fresh":
        yield None
        return
    from autograder._sandbox import worker_env
    from autograder._zygote import Zygote
    z = Zygote([], worker_env("cpu"))
    yield z
    z.close()


@pytest.fixture(scope="session")
def course():
    from autograder import load_course
    return load_course(ROOT)


def parts(result) -> dict:
    """A check result's parts by id."""
    return {p.id: p for p in result.parts}


def processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds `marker` (e.g. the argument of a `sleep` a submission left
    behind): how the lifetime tests find what a student's code started."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and marker.encode() in open(f"/proc/{name}/cmdline", "rb").read():
                pids.append(int(name))
        except OSError:
            pass
    return pids


def notebook_with(source_nb: Path, replacements: dict[str, str], dest: Path) -> Path:
    """Copy a notebook, replacing the source of the cells whose nbgrader grade_id is a key."""
    nb = json.loads(Path(source_nb).read_text())
    seen = set()
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in replacements:
            cell["source"] = replacements[gid]
            seen.add(gid)
    missing = set(replacements) - seen
    assert not missing, f"no cells with grade_id {missing}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb, indent=1))
    return dest
