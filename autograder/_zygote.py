"""A zygote: one process that imports the frameworks once and forks a fresh worker for each request.

Grading a class pays the ~8 s import of torch and TensorFlow once instead of twice per student. The zygote runs
no student code; each forked child is a new process (own pid, session, scratch folder and limits) that runs
the same harness a freshly started worker would. CUDA is never touched before the fork (device queries happen
in the child), which keeps fork safe.

Protocol on a Unix socket: the client sends {"op": "spawn", "cwd": ..., "jail": bool} with three file
descriptors (the child's request pipe, reply pipe and output pipe); the zygote answers {"pid": N}, and later
{"exit": N, "status": S} when that child ends (S is negative for a signal, as in subprocess). A child asked to
`jail` becomes the keeper of a jailed process (autograder._jail) before it serves.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading

_MAX_FDS = 3


# -- the zygote process --------------------------------------------------------------------------------
def _serve(sock: socket.socket, frameworks: list[str]) -> None:
    import importlib

    import autograder._harness as harness  # noqa: F401  (imported before any fork, as a fresh worker would)
    import autograder._jail as jail  # noqa: F401  (and the jail, with its libc handle: not once per child)
    for name in frameworks:
        try:
            importlib.import_module(name)
        except ImportError:  # a machine with one framework: its children report the missing one themselves
            pass
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            sock.sendall(json.dumps(msg).encode() + b"\n")

    def reap(*_):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            threading.Thread(target=send, args=({"exit": pid, "status": code},)).start()

    signal.signal(signal.SIGCHLD, reap)
    send({"ready": True})
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 65536, _MAX_FDS)
        except InterruptedError:
            continue
        if not msg:
            return
        request = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            _child(sock, fds, request)
        for fd in fds:
            os.close(fd)
        send({"pid": pid})


def _child(sock: socket.socket, fds: list[int], request: dict) -> None:
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        os.setsid()
        req_r, rep_w, out_w = fds
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(out_w)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        low, high = sorted((req_r, rep_w))
        for start, stop in ((3, low), (low + 1, high), (high + 1, os.sysconf("SC_OPEN_MAX"))):
            os.closerange(start, stop)  # nothing of the zygote's (its socket, other children's pipes) leaks in
        os.chdir(request["cwd"])
        sys.argv = ["autograder._harness", str(req_r), str(rep_w)]
        from autograder import _jail
        from autograder._harness import serve
        _jail.die_with_parent()  # the zygote ends when its grader does (its socket closes): so do its workers
        serve(req_r, rep_w, _jail.enter(request["cwd"]) if request.get("jail") else None)
        sys.stdout.flush()
    finally:
        os._exit(0)


# -- the client, in the grader -------------------------------------------------------------------------
class ZygoteChild:
    """A forked worker, with the part of subprocess.Popen's interface the sandbox uses."""

    def __init__(self, zygote: Zygote, pid: int, stdout):
        self.zygote, self.pid, self.stdout = zygote, pid, stdout
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, status: int) -> None:
        self.returncode = status
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("zygote child", timeout)
        return self.returncode


class Zygote:
    """Start one with the frameworks to preload; `spawn()` forks a worker. Safe to share between threads."""

    def __init__(self, frameworks: list[str], env: dict):
        self.frameworks = list(frameworks)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", "import sys, socket, json; from autograder._zygote import _serve; "
             "_serve(socket.socket(fileno=int(sys.argv[1])), json.loads(sys.argv[2]))",
             str(theirs.fileno()), json.dumps(self.frameworks)],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self._sock = ours
        self._lock = threading.Lock()        # one spawn at a time: replies come in order
        self._spawned: queue.Queue = queue.Queue()
        self._children_lock = threading.Lock()
        self._children: dict[int, ZygoteChild] = {}
        self._early_exits: dict[int, int] = {}
        self._ready = threading.Event()
        self._dead = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:  # close() closed the socket under us: the same end as the zygote's exit
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "ready" in msg:
                    self._ready.set()
                elif "pid" in msg:
                    self._spawned.put(msg["pid"])
                elif "exit" in msg:
                    with self._children_lock:
                        child = self._children.pop(msg["exit"], None)
                        if child is None:
                            self._early_exits[msg["exit"]] = msg["status"]
                    if child is not None:
                        child._exited(msg["status"])
        self._dead = True
        self._ready.set()
        self._spawned.put(-1)
        for child in list(self._children.values()):
            child._exited(-signal.SIGKILL)

    def spawn(self, cwd: str, req_r: int, rep_w: int, jail: bool = False) -> ZygoteChild:
        self._ready.wait(300)
        if self._dead:
            raise RuntimeError("the grading zygote died")
        out_r, out_w = os.pipe()
        with self._lock:
            request = json.dumps({"op": "spawn", "cwd": cwd, "jail": jail}).encode()
            socket.send_fds(self._sock, [request], [req_r, rep_w, out_w])
            pid = self._spawned.get(timeout=60)
        os.close(out_w)
        if pid < 0:
            os.close(out_r)
            raise RuntimeError("the grading zygote died")
        child = ZygoteChild(self, pid, os.fdopen(out_r, "rb"))
        with self._children_lock:
            self._children[pid] = child
            if pid in self._early_exits:
                child._exited(self._early_exits.pop(pid))
        return child

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
