"""Restrict the student's worker to the files it needs, with Linux Landlock (kernel 5.13+, no privileges needed).

After this, the process and everything it starts may read the Python installation and system libraries, and
write only its scratch folder: not the course (solutions/, submitted/, gradebook.db), not other students'
folders. Where the kernel lacks Landlock, nothing is restricted and the caller is told so.
"""
from __future__ import annotations

import ctypes
import os
import platform

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446   # the same on x86-64 and arm64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_AND_REMOVE = sum(1 << i for i in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
REFER, TRUNCATE = 1 << 13, 1 << 14
READ = EXECUTE | READ_FILE | READ_DIR


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _handled(abi: int) -> int:
    mask = READ | WRITE_FILE | _MAKE_AND_REMOVE
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    return mask


def restrict(read_paths, write_paths) -> str:
    """Allow reading `read_paths` and reading/writing `write_paths`, deny the rest; returns what was done."""
    if platform.system() != "Linux":
        return "unrestricted (Landlock needs Linux)"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi < 1:
        return f"unrestricted (no Landlock in this kernel: {os.strerror(ctypes.get_errno())})"
    handled = _handled(abi)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"unrestricted (Landlock refused a ruleset: {os.strerror(ctypes.get_errno())})"
    try:
        for paths, access in ((read_paths, READ), (write_paths, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    # A file (not a folder) may only carry the file rights.
                    rights = access if os.path.isdir(path) else access & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE)
                    rule = _PathBeneath(rights, fd)
                    if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                        return f"unrestricted (Landlock refused a rule for {path})"
                finally:
                    os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "unrestricted (no_new_privs failed)"
        if libc.syscall(_SYS_RESTRICT, ruleset, 0) != 0:
            return f"unrestricted (Landlock refused: {os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return f"landlock v{abi}"
