"""The worker's limits: whatever the student's code does, the parent gets one clear sentence, quickly."""
import time

import pytest

from autograder._registry import Limits
from autograder._sandbox import Worker, WorkerError

LIMITS = Limits(startup_timeout_s=8, call_timeout_s=8, memory_mb=512, output_kb=64)


def start(source, zygote):
    # No framework: these tests are about the process, and start in well under a second.
    return Worker("student", [{"label": "cell 1", "source": source}], [], "cpu", LIMITS, zygote)


def outcome(source, zygote, call=None):
    worker = start(source, zygote)
    t0 = time.monotonic()
    try:
        worker.wait_ready()
        if call:
            reply = worker.request({"op": "call", "fn": call, "args": [], "framework": "numpy"}, f"in {call}")
            return reply, time.monotonic() - t0
        return worker.ready, time.monotonic() - t0
    except WorkerError as e:
        return str(e), time.monotonic() - t0
    finally:
        worker.close()


@pytest.mark.parametrize("source,call,expected", [
    ("while True:\n    pass", None, "took longer than 8 s while running the notebook's cells (cell 1 was running)"),
    ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
     "while True:\n    pass", None, "took longer than 8 s"),
    ("def f():\n    while True:\n        pass", "f", "took longer than 8 s in f"),
    ("import os\ndef f():\n    os._exit(0)", "f", "exited with status 0 (sys.exit or os._exit?) in f"),
    ("import ctypes\ndef f():\n    return ctypes.string_at(0)", "f", "was killed by a segmentation fault in f"),
    ("def f():\n    return bytearray(2 * 1024 ** 3)", "f", "used more than 512 MB of memory"),
    ("def f():\n    while True:\n        print('x' * 1000)", "f", "printed more than 64 KB of output"),
    ("import os, sys\ndef f():\n    os.write(int(sys.argv[2]), b'{not json\\n')", "f", "sent an unreadable reply"),
])
def test_each_abuse_ends_in_one_clear_sentence(source, call, expected, launcher):
    message, seconds = outcome(source, launcher, call)
    assert isinstance(message, str) and expected in message, message
    assert "\n" not in message and seconds < 20


def test_sys_exit_in_a_cell_is_that_cells_error_and_the_rest_still_runs(launcher):
    worker = Worker("student", [{"label": "cell 1", "source": "import sys\nsys.exit(3)"},
                                {"label": "cell 2", "source": "def f():\n    return 1.5"}], [], "cpu", LIMITS,
                    launcher)
    try:
        ready = worker.wait_ready()
        assert ready["cell_errors"][0]["label"] == "cell 1" and "SystemExit" in ready["cell_errors"][0]["error"]
        reply = worker.request({"op": "call", "fn": "f", "args": [], "framework": "numpy"}, "in f")
        assert reply["ok"] and float(reply["output"]["array"]) == 1.5
    finally:
        worker.close()


def test_the_student_cannot_pickle_objects_into_the_parent(launcher):
    message, _ = outcome("import os, sys\ndef f():\n    os.write(int(sys.argv[2]), "
                         "b'{\"ok\": true, \"output\": {\"__nd__\": \"|O\", \"shape\": [1], \"b64\": \"\"}}\\n')",
                         launcher, "f")
    assert "sent an unreadable reply" in message


def test_the_students_code_cannot_read_the_course_or_write_outside_its_scratch_folder(launcher, tmp_path):
    from conftest import ROOT
    secret = ROOT / "solutions" / "01_tensors" / "01_tensors.ipynb"
    gradebook = tmp_path / "gradebook.db"
    gradebook.write_text("grades")
    probe = f'''
import os
def f():
    verdicts = []
    for path, mode in (({str(secret)!r}, "r"), ({str(gradebook)!r}, "a"), ({str(ROOT / "course.toml")!r}, "r")):
        try:
            open(path, mode).close()
            verdicts.append(1.0)
        except PermissionError:
            verdicts.append(0.0)
    with open("mine.txt", "w") as fh:  # the scratch folder stays writable
        fh.write("ok")
    import numpy                        # and the installed packages readable
    return verdicts
'''
    worker = start(probe, launcher)
    try:
        worker.wait_ready()
        assert {"fs", "uid", "pidns"} <= set(worker.isolation), worker.isolation_missing
        reply = worker.request({"op": "call", "fn": "f", "args": [], "framework": "numpy"}, "in f")
        assert reply["ok"], reply
        assert [float(i["array"]) for i in reply["output"]["items"]] == [0.0, 0.0, 0.0]
        assert gradebook.read_text() == "grades"
    finally:
        worker.close()


def test_an_error_inside_grader_code_names_the_students_function(launcher):
    """Grader code in the worker (autograder/worker, called as "@name") calls the student's functions: an error
    names the student's function, where it failed in the student's code, or the function the request stands for
    when the grader's own check of what it returned fails."""
    notebooks = {
        "unwritten": "def benchmark_step(modes, b, s, w):\n    raise NotImplementedError()\n",
        "broken": "def benchmark_step(modes, b, s, w):\n    return [1][5]\n",
        "wrong type": "def benchmark_step(modes, b, s, w):\n    return [0.1]\n",
        "missing": "x = 1\n",
    }
    errors = {}
    for name, source in notebooks.items():
        worker = Worker("student", [{"label": "cell 3", "source": source}], [], "cpu", LIMITS, launcher,
                        "autograder.worker.m09_capstone")
        try:
            worker.wait_ready()
            message = {"op": "call", "fn": "@benchmark", "args": ["tf_xla", 32, 5, 1], "framework": "numpy",
                       "blame": "benchmark_step"}
            errors[name] = worker.request(message, "in benchmark_step")["error"]
        finally:
            worker.close()
    assert errors["unwritten"] == "benchmark_step is not written yet: it raises NotImplementedError (at cell 3, line 2)"
    assert errors["broken"] == "benchmark_step raised IndexError: list index out of range (at cell 3, line 2)"
    assert errors["wrong type"].startswith("benchmark_step raised TypeError: benchmark_step returned a list")
    assert errors["missing"] == "benchmark_step is not defined"
