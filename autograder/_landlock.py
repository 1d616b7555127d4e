"""Landlock (Linux 5.13+, no privileges needed): files, TCP and signals, for the student's worker and its children.

After `restrict`, the process and everything it starts may read only the paths it was given, write only its
scratch folder, open no TCP connection and bind no TCP port (ABI 4+), and neither signal nor connect to an abstract
unix socket of any process outside its own Landlock domain (ABI 6+). Where the kernel lacks a piece, that piece is
missing from the returned list, and the caller says so.
"""
from __future__ import annotations

import ctypes
import os
import platform

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446   # the same on x86-64 and arm64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1

# File-system rights, with the ABI that introduced each (a right must be handled to be denied).
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ = EXECUTE | READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV   # all a rule on a non-directory may carry
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1                         # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1                      # ABI 6


_libc = ctypes.CDLL(None, use_errno=True) if platform.system() == "Linux" else None
if _libc is not None:
    _libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def handled_fs(abi: int) -> int:
    mask = (1 << 13) - 1   # ABI 1: EXECUTE … MAKE_SYM
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    if abi >= 5:
        mask |= IOCTL_DEV
    return mask


def abi_version() -> int:
    """Landlock's ABI version in this kernel; 0 where there is none (or not Linux)."""
    if _libc is None:
        return 0
    return max(0, _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)))


def _unavailable(why: str) -> tuple[list[str], dict[str, str]]:
    return [], {"fs": why, "net-landlock": why, "signal-landlock": why}


def restrict(rules: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """Allow each path in `rules` the rights it maps to, deny every other file access, all TCP and all signals
    and abstract sockets out of the domain. Returns (what is enforced, {what is missing: why})."""
    libc = _libc
    abi = abi_version()
    if abi < 1:
        return _unavailable("Landlock needs Linux 5.13+" if platform.system() == "Linux" else "Landlock needs Linux")
    fs = handled_fs(abi)
    attr = _RulesetAttr(fs, (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8   # the struct as this ABI knows it
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return _unavailable(f"Landlock refused a ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for path, rights in rules.items():
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue   # not on this machine (a GPU device file, a missing /lib64)
            try:
                allowed = (rights if os.path.isdir(path) else rights & _FILE_RIGHTS) & fs
                rule = _PathBeneath(allowed, fd)
                if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    why = f"Landlock refused a rule for {path}: {os.strerror(ctypes.get_errno())}"
                    return [], {"fs": why}
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return [], {"fs": "no_new_privs failed"}
        if libc.syscall(_SYS_RESTRICT, ruleset, 0) != 0:
            return [], {"fs": f"Landlock refused: {os.strerror(ctypes.get_errno())}"}
    finally:
        os.close(ruleset)
    enforced, missing = ["fs"], {}
    if abi >= 4:
        enforced.append("net-landlock")
    else:
        missing["net-landlock"] = f"Landlock ABI {abi} has no network rules (4+)"
    if abi >= 6:
        enforced.append("signal-landlock")
    else:
        missing["signal-landlock"] = f"Landlock ABI {abi} has no signal scope (6+)"
    return enforced, missing
