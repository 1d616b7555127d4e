"""The jail, probed from outside: each attack of issue 11's review, run in a student's worker of whichever
`autograder` this interpreter imports, printed as BREACH or held. Not a test: a way to compare two versions.

    python benchmarks/jail_probe.py
    # against an older commit: git worktree add /tmp/old COMMIT, then run this file with PYTHONPATH=/tmp/old
    # (the workers start with `python -I`, so that interpreter must import the old package by itself: a venv whose
    # .pth lists /tmp/old before the packages does).

It uses only what every version has had: Worker, Limits and worker_env.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from autograder._registry import Limits
from autograder._sandbox import Worker, WorkerError

LIMITS = Limits(startup_timeout_s=20, call_timeout_s=20, memory_mb=1024, output_kb=64)
SECRET = "secret-7f3a"


def probe(source: str) -> tuple[str, float]:
    """Define probe() in a student's worker and call it; (its value or the error, seconds until close() returned)."""
    worker = Worker("student", [{"label": "cell 1", "source": source}], [], "cpu", LIMITS)
    try:
        reply = worker.request({"op": "call", "fn": "probe", "args": [], "framework": "numpy"}, "in probe")
        value = str(reply["output"].get("value", reply)) if reply.get("ok") else str(reply.get("error"))
    except WorkerError as e:
        value = f"worker: {e}"
    t0 = time.monotonic()
    worker.close()
    return value, time.monotonic() - t0


def attempt(code: str) -> str:
    return (f"import os, signal, socket\ndef probe():\n    try:\n        {code}\n        return 'done'\n"
            f"    except OSError as e:\n        return repr(e)\n")


def running(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and marker.encode() in open(f"/proc/{name}/cmdline", "rb").read():
                pids.append(int(name))
        except OSError:
            pass
    return pids


def main() -> None:
    os.environ["JUPYTERHUB_API_TOKEN"] = SECRET
    server = socket.create_server(("127.0.0.1", 0))
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    marker = f"29.{int(time.time()) % 10000}"   # seconds: on a version without the jail, close() waits it out
    escape = (f"import os\ndef probe():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
              f"            os.execv('/bin/sleep', ['sleep', '{marker}'])\n        os._exit(0)\n    os.wait()\n"
              f"    return 'left one'\n")
    overflow = ('import os, sys\ndef probe():\n    os.write(int(sys.argv[2]), b\'{"ok": true, "output": {"__nd__": '
                '"<f4", "shape": [18446744073709551616], "b64": ""}}\\n\')\n    return "sent"\n')
    rows = []
    try:
        checks = [
            ("env: a grader secret is visible", "import os\ndef probe():\n    return os.environ.get("
             "'JUPYTERHUB_API_TOKEN', 'absent')", lambda v: v == SECRET),
            ("net: TCP to a loopback server", attempt(f"socket.create_connection(('127.0.0.1', "
                                                      f"{server.getsockname()[1]}), timeout=2).close()"),
             lambda v: v == "done"),
            ("signal: another process can be signalled", attempt(f"os.kill({victim.pid}, 0)"), lambda v: v == "done"),
            ("sight: other processes in /proc", "import os\ndef probe():\n    return str(sum(p.isdigit() for p in "
             "os.listdir('/proc')))", lambda v: v.isdigit() and int(v) > 1),
            ("files: /etc/shadow is readable", attempt("open('/etc/shadow').read(1)"), lambda v: v == "done"),
            ("files: /dev/shm is writable", attempt("open('/dev/shm/clash-probe', 'w').write('x')"),
             lambda v: v == "done"),
            ("files: /opt is listable", attempt("os.listdir('/opt')"), lambda v: v == "done"),
            ("uid: the student runs as root", "import os\ndef probe():\n    return str(os.getuid())",
             lambda v: v == "0"),
        ]
        for name, source, breached in checks:
            value, _ = probe(source)
            rows.append((breached(value), name, value))
        t0 = time.monotonic()
        value, _ = probe(overflow)
        rows.append((time.monotonic() - t0 > 15, "reader: an OverflowError in decode stalls to the timeout",
                     f"{time.monotonic() - t0:.1f} s: {value}"))
        value, closed_in = probe(escape)
        time.sleep(1)
        left = running(marker)
        rows.append((bool(left) or closed_in > 10, "lifetime: a setsid child outlives the check",
                     f"close() took {closed_in:.1f} s; left running: {left}"))
    finally:
        for pid in running(marker):
            os.kill(pid, 9)
        victim.kill()
        server.close()
        try:
            os.unlink("/dev/shm/clash-probe")
        except OSError:
            pass
    for breached, name, value in rows:
        print(f"{'BREACH' if breached else 'held  '}  {name}: {value[:110]}")
    print(f"{sum(b for b, _, _ in rows)} of {len(rows)} attacks breached")


if __name__ == "__main__":
    main()
