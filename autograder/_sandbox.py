"""The parent's handle on one worker process: start it with limits, talk to it, and kill it.

The worker runs untrusted code, so everything it says is validated, every wait has a deadline,
and the whole process group dies with SIGKILL (which no handler can ignore).
"""
from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager

from autograder._protocol import MAX_LINE, ProtocolError, decode, encode
from autograder._registry import Limits

_SIGNALS = {signal.SIGSEGV: "a segmentation fault", signal.SIGKILL: "SIGKILL", signal.SIGABRT: "an abort",
            signal.SIGBUS: "a bus error", signal.SIGFPE: "a floating-point exception"}


_live: "weakref.WeakSet[Worker]" = weakref.WeakSet()   # every worker this process runs
_timing = threading.Lock()                              # one timed section at a time in this process


@contextmanager
def exclusive_timing(*timed: "Worker"):
    """Freeze every other worker of this process while `timed` are measured, so that a parallel check, or a
    student's runaway loop elsewhere, cannot change this check's ratio (a grade must not depend on neighbours)."""
    with _timing:
        others = [w for w in list(_live) if w not in timed]
        for w in others:
            w.pause()
        try:
            yield
        finally:
            for w in others:
                w.resume()


@contextmanager
def same_cpu(*timed: "Worker"):
    """Run the timed workers on one and the same CPU while they are compared: on a busy machine each process
    otherwise runs at the speed of the core it happens to sit on (a neighbour on its hyperthread sibling halves
    it), and that can differ between the two for a whole measurement."""
    try:
        cpu = min(os.sched_getaffinity(0))
    except (OSError, AttributeError):  # not Linux: nothing to pin
        yield
        return
    for w in timed:
        w.pin({cpu})
    try:
        yield
    finally:
        for w in timed:
            w.pin(None)


class WorkerError(RuntimeError):
    """The worker could not answer: it died, timed out, flooded its output or broke the protocol."""


def worker_env(device: str) -> dict:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    # One CPU thread per worker, on both sides alike: ratios then do not depend on how busy the other cores are
    # (TF's graph executor hands work between pool threads, which stalls when a neighbour holds the cores).
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


class Worker:
    """One notebook's code, running in its own process group, in a scratch folder."""

    def __init__(self, role: str, cells: list[dict], frameworks: list[str], device: str, limits: Limits,
                 zygote=None):
        self.role, self.limits = role, limits
        self.replies: queue.Queue = queue.Queue()
        self.output = bytearray()   # the last output_kb of what the student printed, for diagnostics
        self.failure: str | None = None
        self.running_cell: str | None = None
        self.ready: dict | None = None
        self._paused_at: float | None = None
        self._paused_total = 0.0   # time frozen by exclusive_timing does not count against this worker's limits
        self._scratch = tempfile.TemporaryDirectory(prefix=f"clash-{role}-")
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        if zygote is not None:  # forked from a process that has imported the frameworks already
            self.proc = zygote.spawn(self._scratch.name, req_r, rep_w)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "autograder._harness", str(req_r), str(rep_w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(req_r, rep_w), cwd=self._scratch.name, env=worker_env(device), start_new_session=True)
        os.close(req_r)
        os.close(rep_w)
        os.set_blocking(self._req_w, False)
        _live.add(self)
        for target in (self._read_replies, self._drain_output, self._watch_memory):
            threading.Thread(target=target, daemon=True).start()
        # Only the student's code is confined to its scratch folder; the reference is the course's own.
        self._send({"op": "setup", "cells": cells, "frameworks": frameworks, "device": device,
                    "memory_mb": limits.memory_mb, "isolate": role == "student"})

    # -- threads -------------------------------------------------------------------------------------
    def _read_replies(self) -> None:
        buf = b""
        with os.fdopen(self._rep_r, "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        msg = decode(line)
                    except ProtocolError as e:
                        self._fail(f"sent an unreadable reply ({e})")
                        return
                    if msg.get("event") == "cell":
                        self.running_cell = str(msg.get("label"))
                    else:
                        self.replies.put(msg)
                if len(buf) > MAX_LINE:
                    self._fail("sent a reply larger than the protocol allows")
                    return
        self.replies.put(None)

    def _drain_output(self) -> None:
        cap, total = self.limits.output_kb * 1024, 0
        read = self.proc.stdout.read1
        while True:
            try:
                chunk = read(65536)
            except (OSError, ValueError):  # closed by close(): the worker is gone
                return
            if not chunk:
                return
            total += len(chunk)
            self.output += chunk
            del self.output[:-cap]
            if total > cap:
                self._fail(f"printed more than {self.limits.output_kb} KB of output")
                return

    def _watch_memory(self) -> None:
        limit_kb = self.limits.memory_mb * 1024
        while self.proc.poll() is None:
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            except (OSError, ValueError):
                return
            if rss > limit_kb:
                self._fail(f"used more than {self.limits.memory_mb} MB of memory")
                return
            time.sleep(0.05)

    # -- control -------------------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.kill()
        self.replies.put(None)

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def pause(self) -> None:
        """SIGSTOP the worker's process group: it computes nothing until resume()."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        if self._paused_at is not None:
            self._signal_group(signal.SIGCONT)
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the worker's threads, read by this (trusted) process from /proc; None where
        there is no /proc (not Linux) or it cannot be read. A busy machine stretches a request's wall time by
        chance, not the CPU time its work needs."""
        try:
            task = f"/proc/{self.proc.pid}/task"
            total = 0
            for tid in os.listdir(task):
                with open(f"{task}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            return total / 1e9
        except (OSError, ValueError, IndexError):
            return None

    def pin(self, cpus: set[int] | None) -> None:
        """Run every thread of the worker on `cpus` (None: wherever this process may run, as the worker did when
        it started). Linux only; elsewhere a no-op."""
        try:
            cpus = cpus if cpus is not None else os.sched_getaffinity(0)
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:  # a thread that has just ended
                    pass
        except (OSError, AttributeError):
            pass

    def _frozen(self) -> float:
        return self._paused_total + (time.monotonic() - self._paused_at if self._paused_at is not None else 0.0)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _death(self) -> str:
        if self.failure:
            return self.failure
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            return f"was killed by {_SIGNALS.get(-code, signal.Signals(-code).name)}"
        return f"exited with status {code}" + (" (sys.exit or os._exit?)" if code in (0, 1) else "")

    def _send(self, message: dict) -> None:
        """Write with a deadline: a worker stuck in a loop stops reading, and must not hang the parent."""
        data, deadline = encode(message), time.monotonic() + self.limits.call_timeout_s
        try:
            while data:
                if not select.select([], [self._req_w], [], max(0.0, deadline - time.monotonic()))[1]:
                    self._fail(f"stopped reading requests for {self.limits.call_timeout_s:g} s")
                    return
                data = data[os.write(self._req_w, data[:65536]):]
        except OSError:
            pass  # a dead worker: the reply reader reports how it died

    def receive(self, timeout: float, doing: str) -> dict:
        if self.failure:
            raise WorkerError(f"your code {self.failure}")
        deadline = time.monotonic() + timeout - self._frozen()
        while True:  # the deadline moves on by however long this worker is kept frozen
            remaining = deadline + self._frozen() - time.monotonic()
            if remaining <= 0:
                self._fail(f"took longer than {timeout:g} s {doing}")
                raise WorkerError(f"your code {self.failure}") from None
            try:
                msg = self.replies.get(timeout=min(remaining, 0.5))
                break
            except queue.Empty:
                continue
        if msg is None:
            self.replies.put(None)  # keep reporting the death to later callers
            raise WorkerError(f"your code {self._death()} {doing}")
        return msg

    def wait_ready(self) -> dict:
        if self.ready is None:
            try:
                self.ready = self.receive(self.limits.startup_timeout_s, "while running the notebook's cells")
            except WorkerError as e:
                where = f" ({self.running_cell} was running)" if self.running_cell else ""
                raise WorkerError(f"{e}{where}") from None
            if not self.ready.get("ok"):
                raise WorkerError(str(self.ready.get("error")))
        return self.ready

    def request(self, message: dict, doing: str, timeout: float | None = None) -> dict:
        self.wait_ready()
        self._send(message)
        return self.receive(timeout or self.limits.call_timeout_s, doing)

    def send(self, message: dict) -> None:
        """Send without waiting, so that two workers can compute at once; pair it with receive()."""
        self.wait_ready()
        self._send(message)

    def close(self) -> None:
        _live.discard(self)
        self.resume()
        if self.proc.poll() is None:
            self._send({"op": "quit"})
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        self.proc.wait()
        self.proc.stdout.close()
        try:
            os.close(self._req_w)
        except OSError:
            pass
        self._scratch.cleanup()
