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
                         "b'{\"ok\": true, \"output\": {\"__nd__\": \"|O\", \"shape\": [1], \"b64\": \"\"}}\\n')", launcher, "f")
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


def test_an_error_inside_a_grader_helper_names_the_students_function(launcher):
    """A spec's HELPERS call the student's functions: the message names the student's function, not the helper."""
    cells = [{"label": "cell 3", "source": "def unwritten():\n    raise NotImplementedError()\n"
                                          "def broken(x):\n    return x[5]\n"},
             {"label": "course helpers 1", "source": "def _clash_a():\n    return unwritten()\n"
                                                     "def _clash_b():\n    return broken([1])\n"
                                                     "def _clash_c():\n    return undefined_name()\n"}]
    worker = Worker("student", cells, [], "cpu", LIMITS, launcher)
    try:
        worker.wait_ready()
        errors = [worker.request({"op": "call", "fn": fn, "args": [], "framework": "numpy"}, f"in {fn}")["error"]
                  for fn in ("_clash_a", "_clash_b", "_clash_c")]
    finally:
        worker.close()
    assert errors[0] == "unwritten is not written yet: it raises NotImplementedError (at cell 3, line 2)"
    assert errors[1] == "broken raised IndexError: list index out of range (at cell 3, line 4)"
    assert errors[2].startswith("_clash_c raised NameError") and "is not defined" in errors[2]
