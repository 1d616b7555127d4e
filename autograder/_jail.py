"""The jail around a student's worker (Linux): what its code can reach, and how long anything it starts lives.

`enter()` runs in a fresh, single-threaded worker process before any student code, and splits it in two:
- the *keeper* (the process the grader started or the zygote forked) stays outside, waits, and exits the way the
  jailed process did; it runs no student code;
- the *jailed* process is PID 1 of a new PID namespace (when it ends, the kernel kills every process left in it,
  double-forked `setsid` children included; its /proc shows only its own tree), in new network (no interface but a
  down loopback: no TCP to anything, no abstract unix socket outside) and IPC namespaces, with a uid of its own
  instead of root, and a process-count limit. Landlock (files, TCP, signals) is applied later, by `confine()`,
  once the frameworks are imported.

Every step is best-effort: a kernel or container that refuses one leaves that protection out of the report, with
the reason, and the check still runs. Names of the protections, as reported in a result's `isolation`:
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
import sys
from dataclasses import dataclass, field

from autograder import _landlock

PROTECTIONS = {
    "env": "the environment is an allow-list: no grader secret reaches student code",
    "fs": "files: reads only the Python installation, writes only its scratch folder (Landlock)",
    "net": "no network: no TCP connect or bind, no abstract unix socket outside (network namespace, Landlock)",
    "signal": "signals reach only its own processes: not the grader, the reference, the zygote, other students",
    "pidns": "its own PID namespace: sees only its own processes, and all of them die with the check",
    "uid": "not root: a uid of its own, so root-only files stay unreadable",
    "limits": "limits on CPU time, processes, address space and core files back the grader's clock",
}

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 8192, 16384, 1 << 18
_PR_SET_PDEATHSIG, _MNT_DETACH = 1, 2
UID_BASE = 1_600_000_000   # + the jailed process's pid: unique among live workers, no real account's
NPROC = 1024               # processes and threads of one jailed worker (TensorFlow alone starts dozens of threads)
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Jail:
    pid: int                              # the jailed process, as the grader (outside) numbers it
    enforced: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def _errno() -> str:
    return os.strerror(ctypes.get_errno())


def _mount(source, target, fstype, flags, data=None) -> None:
    def enc(s):
        return s.encode() if s is not None else None
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {_errno()}")


def die_with_parent() -> None:
    """SIGKILL this process when the process (thread) that started it dies: a grader killed by SIGKILL, or a zygote
    that ends, leaves no worker spinning."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def enter(scratch: str) -> Jail:
    """Split this (single-threaded) process into keeper and jailed process; returns in the jailed one only."""
    jail = Jail(pid=os.getpid())
    root = os.geteuid() == 0
    flags = _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | (0 if root else _CLONE_NEWUSER)
    uid, gid = os.geteuid(), os.getegid()
    namespaces = _libc.unshare(flags) == 0
    if not namespaces:
        why = f"unshare refused: {_errno()}" + ("" if root else " (unprivileged user namespaces are off)")
        jail.missing.update(pidns=why, **{"net-ns": why})
    elif not root:  # map ourselves to ourselves: the user namespace only serves to own the others
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError as e:  # a hardened kernel: still no root, still confined below; just no private /proc
            jail.missing["pidns"] = f"could not map the user namespace: {e.strerror}"
    keeper = os.getpid()
    child = os.fork()
    if child:
        _keep(child)   # never returns
    die_with_parent()
    if not os.path.exists(f"/proc/{keeper}"):  # the keeper died before the line above: so do we
        os._exit(1)
    jail.pid = _outside_pid()
    if namespaces:
        jail.enforced.append("net-ns")
        _own_proc(jail)
    if root:
        _drop_root(jail, scratch)
    else:
        jail.enforced.append("uid")
    return jail


def _keep(child: int) -> None:
    """The keeper: hold nothing open, wait for the jailed process, and end as it ended."""
    os.closerange(0, os.sysconf("SC_OPEN_MAX"))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _outside_pid() -> int:
    """This process's pid in the outermost namespace: the first NSpid field, read before /proc is replaced."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("NSpid:")).split()[1])
    except (OSError, StopIteration, ValueError, IndexError):
        return os.getpid()


def _own_proc(jail: Jail) -> None:
    """A private mount namespace with a /proc of the new PID namespace: no other process is in sight."""
    if _libc.unshare(_CLONE_NEWNS) != 0:
        jail.missing["pidns"] = f"no mount namespace for a private /proc: {_errno()}"
        return
    try:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError as e:
        jail.missing["pidns"] = str(e)
        return
    jail.enforced.append("pidns")


def python_paths() -> list[str]:
    """What the worker must read to run at all: the Python installation, its packages, and this package alone
    (not the course folder around it, where solutions/ and the gradebook live)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.join(package, "autograder")}
    paths.update(p for p in sys.path if os.path.isdir(p) and not os.path.samefile(p, package))
    return sorted(paths)


def _blocked_ancestors(paths) -> dict[str, list[str]]:
    """Folders on the way to `paths` that only their owner may enter (a 0700 /root holding pyenv, a home folder),
    each with the names beneath it that must stay reachable."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        parts = os.path.abspath(path).split(os.sep)[1:]
        for i in range(1, len(parts)):
            folder = os.sep + os.sep.join(parts[:i])
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                blocked.setdefault(folder, set()).add(parts[i])
    return {k: sorted(v) for k, v in sorted(blocked.items(), key=lambda kv: len(kv[0]))}


def _expose(blocked: dict[str, list[str]], scratch: str) -> None:
    """Cover each blocked folder with an empty tmpfs and mount back only the names needed beneath it: the worker
    reaches the Python installation under /root, and nothing else of /root."""
    stage = os.path.join(scratch, ".clash-stage")
    os.mkdir(stage, 0o700)
    try:
        for folder, names in blocked.items():
            staged = []
            for i, name in enumerate(names):
                source, target = os.path.join(folder, name), os.path.join(stage, str(i))
                is_dir = os.path.isdir(source)
                os.mkdir(target) if is_dir else open(target, "w").close()
                _mount(source, target, None, _MS_BIND | _MS_REC)
                staged.append((name, target, is_dir))
            _mount("tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
            try:
                for name, target, is_dir in staged:
                    dest = os.path.join(folder, name)
                    os.mkdir(dest) if is_dir else open(dest, "w").close()
                    _mount(target, dest, None, _MS_MOVE)
            except OSError:  # uncover the folder again: the worker keeps its Python, and reports `uid` as missing
                _libc.umount2(folder.encode(), _MNT_DETACH)
                raise
    finally:  # after a failure a staged mount may still be there: detach it, then remove what is left
        for entry in os.listdir(stage):
            path = os.path.join(stage, entry)
            _libc.umount2(path.encode(), _MNT_DETACH)
            try:
                os.rmdir(path) if os.path.isdir(path) else os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(stage)
        except OSError:
            pass


def _drop_root(jail: Jail, scratch: str) -> None:
    """Run as a uid of our own: root-only files become unreadable, and the process limit counts only us."""
    needed = python_paths() + [scratch]
    try:
        blocked = _blocked_ancestors(needed)
        if blocked:
            if "pidns" not in jail.enforced:  # no private mount namespace in which to expose them
                jail.missing["uid"] = f"{next(iter(blocked))} is closed to other users and cannot be exposed"
                return
            _expose(blocked, scratch)
        uid = UID_BASE + jail.pid
        os.chown(scratch, uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)   # from root to another uid: every capability goes too
    except OSError as e:
        jail.missing["uid"] = f"could not drop root: {e}"
        return
    die_with_parent()   # a change of uid clears the death signal: set it again
    resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    jail.enforced.append("uid")


def landlock_rules(scratch: str, gpu_possible: bool) -> dict[str, int]:
    """Each path the jailed process may use, with its Landlock rights: the Python installation and system libraries
    to read, a few named files of /etc and /dev, and its scratch folder to write."""
    L = _landlock
    rules = {p: L.READ for p in python_paths()}
    rules.update({p: L.READ for p in ("/usr", "/lib", "/lib64", "/bin", "/proc", "/sys/devices/system/cpu",
                                      "/sys/fs/cgroup")})
    rules.update({f"/etc/{name}": L.READ for name in (
        "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf", "hosts", "passwd",
        "group", "os-release", "mime.types")})
    rules.update({"/dev/null": L.READ | L.WRITE_FILE, "/dev/zero": L.READ, "/dev/urandom": L.READ,
                  "/dev/random": L.READ, "/dev/full": L.READ | L.WRITE_FILE})
    if gpu_possible:  # the CUDA driver reads the PCI tree and talks to its device files
        rules["/sys"] = L.READ
        for name in os.listdir("/dev"):
            if name.startswith("nvidia"):
                rules[f"/dev/{name}"] = L.READ | L.WRITE_FILE | L.IOCTL_DEV
    rules[scratch] = L.handled_fs(99) & ~(L.MAKE_CHAR | L.MAKE_BLOCK)
    return rules


def confine(jail: Jail, scratch: str, gpu_possible: bool) -> None:
    """Apply Landlock, then settle the report: which protections are in force, and why any other is not."""
    landlock, missing = _landlock.restrict(landlock_rules(scratch, gpu_possible))
    jail.enforced, jail.missing = summarise(jail.enforced + landlock, {**jail.missing, **missing})


def summarise(layers: list[str], missing: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """From the layers that took effect (net-ns, net-landlock, signal-landlock, pidns, uid, fs) to the protections
    in force, in PROTECTIONS' order, and the reason for each one that is not."""
    have = set(layers)
    report = {"env": True, "fs": "fs" in have, "limits": True, "uid": "uid" in have, "pidns": "pidns" in have,
              # Either layer alone closes the network; a PID namespace plus our own uid alone scope signals.
              "net": "net-ns" in have or "net-landlock" in have,
              "signal": "signal-landlock" in have or {"pidns", "uid"} <= have}
    return ([name for name in PROTECTIONS if report[name]],
            {name: _why(name, missing) for name in PROTECTIONS if not report[name]})


def _why(name: str, missing: dict[str, str]) -> str:
    keys = {"net": ("net-ns", "net-landlock"), "signal": ("signal-landlock", "pidns")}.get(name, (name,))
    return "; ".join(missing[k] for k in keys if k in missing) or "not available here"
