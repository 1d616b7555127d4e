"""The timing aids the parent uses on a worker: its CPU time read from /proc, and pinning it to one CPU while two
workers are compared (tested on plain child processes; the speed parts' own tests use real workers)."""
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from autograder._sandbox import Worker, same_cpu

pytestmark = pytest.mark.skipif(not (os.path.isdir("/proc/self/task") and hasattr(os, "sched_setaffinity")),
                                reason="needs Linux's /proc and sched_setaffinity")


def _child(code):
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = SimpleNamespace(proc=proc, jail_pid=None)  # what these Worker methods read: the pid, no jail
    worker.pin = lambda cpus: Worker.pin(worker, cpus)
    return proc, worker


def test_cpu_seconds_counts_the_work_the_worker_did_not_the_time_it_slept():
    proc, worker = _child("import sys, time\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
                          "    t = time.process_time()\n"
                          "    while time.process_time() - t < float(line): pass\n"
                          "    print('done', flush=True)\n")
    try:
        proc.stdout.readline()  # started: its interpreter's start-up is not what is measured
        before = Worker.cpu_seconds(worker)
        time.sleep(0.3)
        slept = Worker.cpu_seconds(worker) - before
        proc.stdin.write("0.2\n")
        proc.stdin.flush()
        proc.stdout.readline()
        worked = Worker.cpu_seconds(worker) - before - slept
        assert slept < 0.05 and 0.18 < worked < 0.4, (slept, worked)
    finally:
        proc.kill()


def test_same_cpu_pins_every_thread_of_both_workers_then_lets_them_go():
    code = "import sys, threading\nthreading.Thread(target=sys.stdin.read, daemon=True).start()\nsys.stdin.readline()"
    children = [_child(code) for _ in range(2)]
    mine = os.sched_getaffinity(0)
    try:
        time.sleep(0.3)  # let each start its second thread
        with same_cpu(*(w for _, w in children)):
            pinned = {frozenset(os.sched_getaffinity(int(tid))) for p, _ in children
                      for tid in os.listdir(f"/proc/{p.pid}/task")}
        after = {frozenset(os.sched_getaffinity(int(tid))) for p, _ in children
                 for tid in os.listdir(f"/proc/{p.pid}/task")}
        assert pinned == {frozenset({min(mine)})}
        assert after == {frozenset(mine)}
    finally:
        for p, _ in children:
            p.kill()
