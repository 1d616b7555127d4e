"""The jail, tried as an attacker who has read the engine: each test runs a probe in a student's worker and, as its
control, shows that the same probe succeeds where nothing confines it (the grader's own process, or the reference
worker, which runs the course's code unconfined). No frameworks: these start in well under a second."""
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from autograder import _jail
from autograder._registry import Limits
from autograder._sandbox import Worker, WorkerError, cpu_seconds_limit, worker_env
from autograder._zygote import Zygote

from conftest import processes_with

LIMITS = Limits(startup_timeout_s=20, call_timeout_s=20, memory_mb=1024, output_kb=64)
ROOT_ONLY = os.geteuid() == 0


def run(source: str, zygote=None, role: str = "student", limits: Limits = LIMITS):
    """Define `probe()` in a worker, call it, return its value (str or float) or the worker's error."""
    worker = Worker(role, [{"label": "cell 1", "source": source}], [], "cpu", limits, zygote)
    try:
        reply = worker.request({"op": "call", "fn": "probe", "args": [], "framework": "numpy"}, "in probe")
        if not reply.get("ok"):
            return f"error: {reply.get('error')}"
        out = reply["output"]
        return out["value"] if out["type"] == "str" else float(out["array"])
    except WorkerError as e:
        return f"worker: {e}"
    finally:
        worker.close()


def attempt(code: str) -> str:
    """A probe that tries `code` and says 'done' or the OSError's name."""
    body = "\n".join("        " + line for line in code.strip().splitlines())
    return f"import os, signal, socket\ndef probe():\n    try:\n{body}\n        return 'done'\n" \
           f"    except OSError as e:\n        return type(e).__name__ + ': ' + str(e)\n"


# -- 2. environment ----------------------------------------------------------------------------------------
def test_a_secret_in_the_graders_environment_never_reaches_student_code(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-7f3a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-9c1e")
    zygote = Zygote([], worker_env("cpu"))   # started after the secrets are set, as a kernel's would be
    try:
        probe = "import os\ndef probe():\n    return ' '.join(f'{k}={v}' for k, v in os.environ.items())"
        for launcher in (None, zygote):
            seen = run(probe, launcher)
            assert "secret-" not in seen and "PATH=" in seen, seen
    finally:
        zygote.close()
    assert os.environ["JUPYTERHUB_API_TOKEN"] == "secret-7f3a"   # control: the grader itself has it


# -- 3. network ----------------------------------------------------------------------------------------------
@pytest.fixture
def listener():
    """A TCP server and an abstract unix socket on this machine, as a Dask scheduler or a kernel would be."""
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(f"\0clash-test-{os.getpid()}")
    unix.listen()
    yield tcp.getsockname()[1], f"\\0clash-test-{os.getpid()}"
    tcp.close()
    unix.close()


def test_no_tcp_connect_or_bind_and_no_abstract_socket_outside(launcher, listener):
    port, abstract = listener
    connect = attempt(f"socket.create_connection(('127.0.0.1', {port}), timeout=2).close()")
    bind = attempt("s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.close()")
    unix = attempt(f"s = socket.socket(socket.AF_UNIX); s.connect('{abstract}'); s.close()")
    for probe in (connect, bind, unix):
        assert run(probe, launcher) != "done", probe
        assert run(probe, launcher, role="reference") == "done", "control: unconfined, the probe succeeds"


def test_the_dask_scheduler_is_unreachable():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        host, port = cluster.scheduler_address.removeprefix("tcp://").rsplit(":", 1)
        probe = attempt(f"socket.create_connection(({host!r}, {port}), timeout=2).close()")
        assert run(probe).startswith(("PermissionError", "OSError", "ConnectionRefusedError")), run(probe)
        assert run(probe, role="reference") == "done"


# -- 4. signals and sight ------------------------------------------------------------------------------------
def test_no_signal_reaches_a_process_outside_the_students_own_tree(launcher):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reference = Worker("reference", [], [], "cpu", LIMITS, launcher)
    try:
        reference.wait_ready()
        targets = [victim.pid, os.getpid(), reference.proc.pid] + ([launcher.proc.pid] if launcher else [])
        for pid in targets:
            probe = attempt(f"os.kill({pid}, signal.SIGSTOP)")
            assert run(probe, launcher) != "done", pid
        assert victim.poll() is None and _state(victim.pid) != "T"
        assert run(attempt(f"os.kill({victim.pid}, 0)"), launcher, role="reference") == "done"   # control
    finally:
        reference.close()
        victim.kill()
        victim.wait()


def test_the_student_sees_only_its_own_processes_in_proc(launcher):
    probe = "import os\ndef probe():\n    return ' '.join(p for p in os.listdir('/proc') if p.isdigit())"
    assert run(probe, launcher) == "1"
    assert len(run(probe, launcher, role="reference").split()) > 5   # control: the machine's processes


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# -- 5. lifetime ---------------------------------------------------------------------------------------------
ESCAPE = '''
import os
def probe():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:     # holds the worker's stdout and its reply pipe, and sleeps
            os.execv("/bin/sleep", ["sleep", "{marker}"])
        os._exit(0)
    os.wait()
    return "left one behind"
'''


def test_a_double_forked_setsid_child_dies_with_the_check_and_close_is_quick(launcher):
    marker = f"{600 + os.getpid() % 1000}.{int(time.time()) % 10000}"
    worker = Worker("student", [{"label": "cell 1", "source": ESCAPE.format(marker=marker)}], [], "cpu", LIMITS,
                    launcher)
    try:
        reply = worker.request({"op": "call", "fn": "probe", "args": [], "framework": "numpy"}, "in probe")
        assert reply["ok"]
        deadline = time.monotonic() + 5
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker), "control: the escaped child is alive while the check runs"
    finally:
        t0 = time.monotonic()
        worker.close()
        closed_in = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_with(marker), "the escaped child outlived the check"
    assert closed_in < 5, closed_in


FORGE = '''
import os, sys
_reply = int(sys.argv[2])
def probe():
    os.write(_reply, {payload!r})
    return "sent"
'''


@pytest.mark.parametrize("payload,expected", [
    # A huge shape: NumPy's product overflows while decoding (it killed the reader thread: a 186 s stall).
    (b'{"ok": true, "output": {"__nd__": "<f4", "shape": [18446744073709551616], "b64": ""}}\n',
     "sent an unreadable reply"),
    # A second ready message, with the fields the parent reads missing.
    (b'{"event": "ready", "ok": true, "info": {}}\n', "malformed ready message"),
    (b'{"event": "jail", "pid": 1, "enforced": [], "missing": {}}\n', "forged jail report"),
])
def test_forged_or_unreadable_replies_end_in_one_clear_sentence_at_once(launcher, payload, expected):
    t0 = time.monotonic()
    message = run(FORGE.format(payload=payload), launcher)
    assert expected in message and "\n" not in message, message
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("line,expected", [
    # A ready message without the fields the parent reads (it crashed the check with KeyError: 'device').
    (b'{"event": "ready", "ok": true, "info": {}}', "malformed ready message"),
    # Replies written before the requests they pretend to answer.
    (b'{"ok": true, "output": {"type": "float"}}', "sent a reply nobody asked for"),
])
def test_messages_forged_while_the_cells_run_fail_the_worker_cleanly(launcher, line, expected):
    flood = repr((line + b"\n") * 100)
    cells = [{"label": "cell 1", "source": f"import os, sys\nos.write(int(sys.argv[2]), {flood})\n"}]
    worker = Worker("student", cells, [], "cpu", LIMITS, launcher)
    try:
        with pytest.raises(WorkerError, match=expected):
            worker.wait_ready()
    finally:
        worker.close()


def test_a_reply_flood_is_bounded_in_memory_and_time(launcher):
    """An endless line: the parent stops at MAX_LINE, in seconds, without growing by more than a few times it."""
    source = ("import os, sys\ndef probe():\n    chunk = b'a' * (1 << 20)\n    while True:\n"
              "        os.write(int(sys.argv[2]), chunk)\n")
    before = _rss_mb()
    t0 = time.monotonic()
    message = run(source, launcher)
    assert "sent a reply larger than 64 MB" in message, message
    assert time.monotonic() - t0 < 15
    assert _rss_mb() - before < 400


def test_a_100_mb_request_is_written_and_read_in_linear_time(launcher):
    """A timed part's inputs for batch 1024 come to ~100 MB in one request. Read in 64 KB pieces with `bytes +=`
    (and written with `data = data[n:]`), the same request took 116 s, past the 60 s per-call limit."""
    import numpy as np
    worker = Worker("student", [], [], "cpu", Limits(startup_timeout_s=20, call_timeout_s=20, memory_mb=3072,
                                                      output_kb=64), launcher)
    items = {f"k{i}": [np.ones((1024, 1, 8, 8), np.float32), np.zeros(1024, np.int64)] for i in range(300)}
    try:
        t0 = time.monotonic()
        reply = worker.request({"op": "load", "items": items, "framework": "numpy"}, "while loading inputs")
        assert reply["ok"] and time.monotonic() - t0 < 15, (reply, time.monotonic() - t0)
    finally:
        worker.close()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_the_cpu_time_and_process_limits_are_set(launcher):
    probe = ("import resource\ndef probe():\n    return ' '.join(str(resource.getrlimit(r)[0]) for r in "
             "(resource.RLIMIT_CPU, resource.RLIMIT_NPROC, resource.RLIMIT_CORE))")
    cpu, nproc, core = run(probe, launcher).split()
    assert int(cpu) == int(cpu_seconds_limit(LIMITS)) and int(core) == 0
    if ROOT_ONLY:   # a uid of its own: the count is this worker's alone
        assert int(nproc) == _jail.NPROC


@pytest.mark.skipif(not ROOT_ONLY, reason="the process limit is per uid: only a grader running as root gives each "
                                          "worker a uid of its own")
def test_a_fork_bomb_stops_at_the_process_limit_and_the_worker_still_answers(launcher):
    source = '''
import os, time
def probe():
    n = 0
    try:
        while n < 5000:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
    except OSError:
        pass
    return float(n)
'''
    forked = run(source, launcher)
    assert isinstance(forked, float) and forked < _jail.NPROC, forked


def test_sigterm_and_sighup_to_clash_check_leave_no_worker_running(tmp_path):
    """`clash check` ended by SIGTERM or SIGHUP cleans up as Ctrl-C does (it exits by itself, its scratch folders
    are gone); SIGKILL gives it no chance, and still no student process survives: the workers die with it."""
    from conftest import ROOT
    notebook = tmp_path / "spin.ipynb"
    marker = f"{700 + os.getpid() % 1000}.{int(time.time()) % 10000}"
    cell = ("import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '" + marker + "'])\n"
            "while True:\n    pass\n")
    notebook.write_text('{"cells": [{"cell_type": "code", "source": ' + _json(cell) + ', "metadata": {}, '
                        '"outputs": [], "execution_count": null}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
        scratch = tmp_path / sig.name
        scratch.mkdir()
        cli = subprocess.Popen([sys.executable, "-m", "autograder.cli", "check", "01_tensors", "--notebook",
                                str(notebook), "--framework", "torch"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(scratch)})
        deadline = time.monotonic() + 120
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with(marker), "control: the student's process runs while the check does"
        assert any(scratch.iterdir()), "control: the check's scratch folders exist while it runs"
        cli.send_signal(sig)
        status = cli.wait(timeout=30)
        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes_with(marker), f"a student process outlived clash check after {sig.name}"
        if sig != signal.SIGKILL:
            assert status > 0, f"{sig.name} killed clash check instead of stopping it ({status})"
            assert not any(scratch.iterdir()), f"scratch folders left after {sig.name}: {list(scratch.iterdir())}"


def _json(text: str) -> str:
    import json
    return json.dumps(text)


# -- 6. files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "open('/etc/shadow').read(1)",                        # root-only
    "open('/dev/shm/clash-channel', 'w').write('hi')",   # a channel between students
    "os.mknod('dev-null-twin', 0o600 | 0o020000, os.makedev(1, 3))",   # a device node, even in its scratch
    "os.close(os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK))",
    "os.listdir('/opt')",
    "open('/etc/hostname').read(1)",                      # /etc is not read wholesale
])
def test_files_outside_what_the_check_needs_are_out_of_reach(launcher, code):
    probe = attempt(code)
    assert run(probe, launcher).startswith(("PermissionError", "FileNotFoundError")), run(probe, launcher)
    if ROOT_ONLY and os.path.exists(code.split("'")[1]) or "mknod" in code:
        assert run(probe, launcher, role="reference") == "done", "control: unconfined as root, it works"


def test_the_student_runs_without_root_and_still_reads_the_python_installation(launcher):
    probe = ("import os, sys\ndef probe():\n    import json, numpy\n"
             "    return f'{os.getuid()} {os.access(sys.base_prefix, os.R_OK)}'")
    uid, readable = run(probe, launcher).split()
    assert int(uid) != 0 and readable == "True"


# -- 7. what was enforced ------------------------------------------------------------------------------------
def test_the_isolation_field_names_the_protections_in_force(launcher):
    worker = Worker("student", [], [], "cpu", LIMITS, launcher)
    try:
        worker.wait_ready()
        assert set(worker.isolation) <= set(_jail.PROTECTIONS) and "landlock v" not in " ".join(worker.isolation)
        assert set(worker.isolation) | set(worker.isolation_missing) == set(_jail.PROTECTIONS)
        assert all(worker.isolation_missing.values())   # every missing protection says why
    finally:
        worker.close()


def test_a_missing_protection_is_named_with_its_reason():
    jail = _jail.Jail(pid=1, enforced=["net-ns", "uid"], missing={"pidns": "unshare refused: EPERM"})
    have, why = _jail.summarise(jail.enforced + ["fs"], {**jail.missing, "signal-landlock": "Landlock ABI 5"})
    assert have == ["env", "fs", "net", "uid", "limits"]
    assert why == {"signal": "Landlock ABI 5; unshare refused: EPERM", "pidns": "unshare refused: EPERM"}


def test_the_worker_of_a_parallel_check_keeps_running_while_a_neighbour_is_attacked(launcher):
    """One student's attack on every process it can find does not reach a neighbour's worker."""
    neighbour = Worker("student", [{"label": "cell 1", "source": "def probe():\n    return 'alive'"}], [], "cpu",
                       LIMITS, launcher)
    try:
        neighbour.wait_ready()
        if not {"pidns", "uid"} <= set(neighbour.isolation):  # outside a jail this attack would hit the machine
            pytest.skip(f"needs a PID namespace and a uid of its own: {neighbour.isolation_missing}")
        attack = ("import os, signal\ndef probe():\n    for p in range(2, 1 << 16):\n        try:\n"
                  "            os.kill(p, signal.SIGKILL)\n        except OSError:\n"
                  "            pass\n    return 'tried'")
        assert run(attack, launcher) == "tried"
        reply = neighbour.request({"op": "call", "fn": "probe", "args": [], "framework": "numpy"}, "in probe")
        assert reply["output"]["value"] == "alive"
        if launcher:
            assert launcher.proc.poll() is None
    finally:
        neighbour.close()



def test_clash_doctor_lists_every_protection_with_its_status():
    from conftest import ROOT
    run_ = subprocess.run([sys.executable, "-m", "autograder.cli", "doctor"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    for name in _jail.PROTECTIONS:
        assert name in run_.stdout
    worker = Worker("student", [], [], "cpu", LIMITS)
    try:
        worker.wait_ready()
    finally:
        worker.close()
    assert run_.returncode == (1 if worker.isolation_missing else 0), run_.stdout
    assert run_.stdout.count("in force") == len(_jail.PROTECTIONS) - len(worker.isolation_missing)


def test_clash_report_names_a_protection_that_was_missing_while_grading(tmp_path):
    import json

    from conftest import ROOT
    course = tmp_path / "course"
    course.mkdir()
    (course / "course.toml").write_text((ROOT / "course.toml").read_text())
    (course / "submitted" / "ada" / "01_tensors").mkdir(parents=True)
    records = course / "grading" / "01_tensors"
    records.mkdir(parents=True)
    (records / "ada.json").write_text(json.dumps({"status": "graded", "score": 10.0, "max_score": 10.0, "reason": "",
                                                  "isolation": "env, fs", "isolation_missing": {
                                                      "pidns": "unshare refused: Operation not permitted"}}))
    run_ = subprocess.run([sys.executable, "-m", "autograder.cli", "report", "01_tensors"], cwd=course,
                          capture_output=True, text=True, timeout=60)
    assert "the jail lacked 'pidns' while grading (unshare refused: Operation not permitted)" in run_.stdout, \
        run_.stdout + run_.stderr
