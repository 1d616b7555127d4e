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

from autograder._protocol import MAX_LINE, MAX_TOTAL, Lines, ProtocolError, decode, encode
from autograder._registry import Limits

_SIGNALS = {signal.SIGSEGV: "a segmentation fault", signal.SIGKILL: "SIGKILL", signal.SIGABRT: "an abort",
            signal.SIGBUS: "a bus error", signal.SIGFPE: "a floating-point exception"}


_live: weakref.WeakSet[Worker] = weakref.WeakSet()   # every worker this process runs
_timing = threading.Lock()                              # one timed section at a time in this process


@contextmanager
def exclusive_timing(*timed: Worker):
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
def same_cpu(*timed: Worker):
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


# What a worker inherits from the grader's environment: the search path, the locale, the GPU selection and the
# frameworks' own switches. Everything else (tokens such as JUPYTERHUB_API_TOKEN, cloud keys) stays behind.
ENV_ALLOWED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH",
    "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND"})


def worker_env(device: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED or k.startswith("LC_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    # One CPU thread per worker, on both sides alike: ratios then do not depend on how busy the other cores are
    # (TF's graph executor hands work between pool threads, which stalls when a neighbour holds the cores).
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _memory_kb(pid: int, path: str = "status", field: str = "VmRSS:") -> int:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field)), 0)
    except (OSError, ValueError, IndexError):
        return 0


class Worker:
    """One notebook's code, running in its own process group, in a scratch folder. A student's worker (`role`
    "student") runs jailed (autograder._jail); the reference runs the course's own code, unconfined."""

    def __init__(self, role: str, cells: list[dict], frameworks: list[str], device: str, limits: Limits,
                 zygote=None, grader: str | None = None):
        self.role, self.limits = role, limits
        self.jailed = role == "student"
        self.replies: queue.Queue = queue.Queue()
        self.output = bytearray()   # the last output_kb of what the student printed, for diagnostics
        self.failure: str | None = None
        self.running_cell: str | None = None
        self.ready: dict | None = None
        self.jail_pid: int | None = None            # the jailed process, once its (trusted) report has come
        self.isolation: list[str] = []              # the protections it reported in force …
        self.isolation_missing: dict[str, str] = {}  # … and those it could not have, with the reason
        self._pidns: int | None = None
        self._phase = "starting"    # starting -> jailed -> ready: what the worker may send depends on it
        self._outstanding = 0       # requests sent and not answered: a reply beyond them was never asked for
        self.called: set[str] = set()   # the student functions called in this worker (their first call may compile)
        self._lock = threading.Lock()
        self._paused_at: float | None = None
        self._paused_total = 0.0   # time frozen by exclusive_timing does not count against this worker's limits
        self._scratch = tempfile.TemporaryDirectory(prefix=f"clash-{role}-", ignore_cleanup_errors=True)
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        if zygote is not None:  # forked from a process that has imported the frameworks already
            self.proc = zygote.spawn(self._scratch.name, req_r, rep_w, jail=self.jailed)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "autograder._harness", str(req_r), str(rep_w)]
                + (["--jail"] if self.jailed else []),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(req_r, rep_w), cwd=self._scratch.name, env=worker_env(device), start_new_session=True)
        os.close(req_r)
        os.close(rep_w)
        os.set_blocking(self._req_w, False)
        _live.add(self)
        for target in (self._read_replies, self._drain_output, self._watch_memory):
            threading.Thread(target=target, daemon=True).start()
        self.grader = grader   # the exercise's worker-side module, whose functions requests name as "@fn"
        self._send({"op": "setup", "cells": cells, "frameworks": frameworks, "device": device, "grader": grader,
                    "memory_mb": limits.memory_mb, "cpu_s": cpu_seconds_limit(limits)})

    # -- threads -------------------------------------------------------------------------------------
    def _read_replies(self) -> None:
        """Read the worker's lines: each at most MAX_LINE, all together at most MAX_TOTAL, in linear time. Anything
        unreadable, unasked for or out of turn fails the worker; no error escapes this thread silently."""
        lines, total = Lines(), 0
        try:
            with os.fdopen(self._rep_r, "rb", buffering=0) as f:
                while self.failure is None:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > MAX_TOTAL:
                        self._fail(f"sent more than {MAX_TOTAL >> 20} MB of replies")
                        break
                    lines.feed(chunk)
                    while self.failure is None and (line := lines.next()) is not None:
                        self._handle(line)
                    if len(lines) > MAX_LINE:
                        self._fail(f"sent a reply larger than {MAX_LINE >> 20} MB")
        except Exception as e:  # a bug here must still end in a clean failure, never a silent stall
            self._fail(f"broke the reply protocol ({type(e).__name__}: {str(e)[:100]})")
        finally:
            self.replies.put(None)

    def _handle(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except ProtocolError as e:
            self._fail(f"sent an unreadable reply ({e})")
            return
        event = msg.get("event")
        if event == "jail":
            self._jail_report(msg)
        elif self.jailed and self._phase == "starting" and not (event == "ready" and msg.get("ok") is False):
            self._fail("spoke before its jail report (a forged or out-of-turn message)")
        elif event == "cell":
            if self._phase == "ready":
                self._fail("sent a cell event after it was ready (a forged message)")
            else:
                self.running_cell = str(msg.get("label"))[:100]
        elif event == "ready":
            problem = _ready_problem(msg) if self._phase != "ready" else "a second ready message"
            if problem:
                self._fail(f"sent a malformed ready message ({problem})")
            else:
                self._phase = "ready"
                self.replies.put(msg)
        else:
            with self._lock:
                asked = self._outstanding > 0
                self._outstanding -= asked
            if not asked:
                self._fail("sent a reply nobody asked for (replies must answer requests)")
            else:
                self.replies.put(msg)

    def _jail_report(self, msg: dict) -> None:
        """The first message of a jailed worker, sent by the grader's code before any notebook code has run."""
        pid, enforced, missing = msg.get("pid"), msg.get("enforced"), msg.get("missing")
        if (not self.jailed or self._phase != "starting" or not isinstance(pid, int) or pid <= 0
                or not isinstance(enforced, list) or not isinstance(missing, dict)):
            self._fail("sent a forged jail report")
            return
        self.jail_pid, self._phase = pid, "jailed"
        self.isolation = [str(e) for e in enforced]
        self.isolation_missing = {str(k): str(v)[:200] for k, v in missing.items()}
        if "pidns" in self.isolation:
            try:
                self._pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
            except OSError:
                self._pidns = None

    def _drain_output(self) -> None:
        cap, total = self.limits.output_kb * 1024, 0
        stream = self.proc.stdout
        try:
            while True:
                try:
                    chunk = stream.read1(65536)
                except (OSError, ValueError):
                    return
                if not chunk:
                    return
                total += len(chunk)
                self.output += chunk
                del self.output[:-cap]
                if total > cap:
                    self._fail(f"printed more than {self.limits.output_kb} KB of output")
                    return
        finally:
            try:  # this thread owns the pipe: close() never blocks on it, whoever still holds its other end
                stream.close()
            except (OSError, ValueError):
                pass

    def _watch_memory(self) -> None:
        """Resident memory of the jailed process every 50 ms, and of its whole tree every 0.5 s: each child's share
        of its anonymous memory (proportional: a page a forked child still shares is not counted in full again)."""
        limit_kb, tick = self.limits.memory_mb * 1024, 0
        while self.proc.poll() is None and self.failure is None:
            main = self.jail_pid or self.proc.pid
            used = _memory_kb(main)
            if tick % 10 == 0 and self._pidns is not None:
                used += sum(_memory_kb(pid, "smaps_rollup", "Pss_Anon:") for pid in self._tree()
                            if pid not in (main, self.proc.pid))
            if used > limit_kb:
                self._fail(f"used more than {self.limits.memory_mb} MB of memory")
                return
            tick += 1
            time.sleep(0.05)

    # -- control -------------------------------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.kill()
        self.replies.put(None)

    def _tree(self) -> list[int]:
        """Every process of this worker, as this process numbers them: the keeper, the jailed process and all in its
        PID namespace (a `setsid` child that left the process group included). Without a PID namespace of its own,
        just the keeper and the jailed process."""
        pids = [self.proc.pid] + ([self.jail_pid] if self.jail_pid else [])
        if self._pidns is None:
            return pids
        try:
            entries = os.listdir("/proc")
        except OSError:
            return pids
        for name in entries:
            if name.isdigit() and int(name) not in pids:
                try:
                    if os.stat(f"/proc/{name}/ns/pid").st_ino == self._pidns:
                        pids.append(int(name))
                except OSError:
                    pass
        return pids

    def _signal_all(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self._tree():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def pause(self) -> None:
        """SIGSTOP every process of the worker: it computes nothing until resume()."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        if self._paused_at is not None:
            self._signal_all(signal.SIGCONT)
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the worker's threads, read by this (trusted) process from /proc; None where
        there is no /proc (not Linux) or it cannot be read. A busy machine stretches a request's wall time by
        chance, not the CPU time its work needs."""
        try:
            task = f"/proc/{self.jail_pid or self.proc.pid}/task"
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
            for tid in os.listdir(f"/proc/{self.jail_pid or self.proc.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:  # a thread that has just ended
                    pass
        except (OSError, AttributeError):
            pass

    def _frozen(self) -> float:
        return self._paused_total + (time.monotonic() - self._paused_at if self._paused_at is not None else 0.0)

    def kill(self) -> None:
        """SIGKILL the keeper and the jailed process; the kernel then kills the rest of its PID namespace."""
        self._signal_all(signal.SIGKILL)

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

    def _send(self, message: dict, data: bytes | None = None) -> None:
        """Write with a deadline on progress: a worker stuck in a loop stops reading, and must not hang the parent;
        one reading a large request (a timed batch's inputs) keeps reading, however long the whole takes. `data` is
        `message` encoded already (a timed request, encoded before its clock starts)."""
        data, sent = memoryview(data if data is not None else encode(message)), 0
        if message.get("op") not in ("setup", "quit"):
            with self._lock:
                self._outstanding += 1
        try:
            while sent < len(data):
                ready = select.select([], [self._req_w], [], self.limits.call_timeout_s)[1]
                if not ready:
                    self._fail(f"stopped reading requests for {self.limits.call_timeout_s:g} s")
                    return
                sent += os.write(self._req_w, data[sent:sent + (1 << 20)])
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
            raise WorkerError(str(self.ready.get("error"))[:500])
        return self.ready

    @property
    def scratch(self) -> str:
        """The worker's scratch folder (its cwd): where it writes, and where the parent reads what it exported."""
        return self._scratch.name

    @property
    def alive(self) -> bool:
        """Still able to answer: not failed (a timeout, a broken protocol) and not exited."""
        return self.failure is None and self.proc.poll() is None

    def request(self, message: dict, doing: str, timeout: float | None = None, data: bytes | None = None) -> dict:
        self.wait_ready()
        self._send(message, data)
        return self.receive(timeout or self.limits.call_timeout_s, doing)

    def send(self, message: dict) -> None:
        """Send without waiting, so that two workers can compute at once; pair it with receive()."""
        self.wait_ready()
        self._send(message)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the worker and everything it started, in bounded time: no pipe an escaped process might hold is
        waited on (the reader threads own and close their pipes)."""
        _live.discard(self)
        self.resume()
        if self.proc.poll() is None and self.failure is None:
            try:
                os.write(self._req_w, encode({"op": "quit"}))
            except OSError:
                pass
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.close(self._req_w)
        except OSError:
            pass
        self._scratch.cleanup()


def cpu_seconds_limit(limits: Limits) -> float:
    """RLIMIT_CPU of a worker: start-up plus twenty calls' worth, a backstop should the parent's clock stop."""
    return limits.startup_timeout_s + 20 * limits.call_timeout_s


def _ready_problem(msg: dict) -> str | None:
    """What is wrong with a ready message, or None. The parent reads these fields; a forged one must not crash it."""
    if msg.get("ok") is not True:
        return None if msg.get("ok") is False else "ok is not a bool"
    info, errors, defined = msg.get("info"), msg.get("cell_errors"), msg.get("defined")
    if not isinstance(info, dict) or info.get("device") not in ("cpu", "cuda"):
        return "info.device"
    if not all(isinstance(v, str) for v in info.values()):
        return "info"
    if not isinstance(errors, list) or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("label", "error", "source"))
            for e in errors):
        return "cell_errors"
    if not isinstance(defined, list) or not all(isinstance(d, str) for d in defined):
        return "defined"
    return None
