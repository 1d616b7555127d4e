"""The wire format between the trusted parent and a worker: one JSON object per line, arrays as base64.

Never pickle: the parent decodes what an untrusted process wrote, so only plain data and whitelisted
numeric dtypes may come back.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os

import numpy as np

MAX_LINE = 64 * 1024 * 1024     # one reply; a bigger one is refused rather than read
MAX_TOTAL = 2 * 1024 ** 3       # all of one worker's replies together
_DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")}


class ProtocolError(ValueError):
    """A message that is not well-formed; from a worker, it means the worker is not to be trusted."""


def _default(obj):
    if isinstance(obj, np.ndarray):
        arr = obj if obj.flags.c_contiguous else obj.copy(order="C")  # ascontiguousarray makes 0-d 1-d
        if arr.dtype.str not in _DTYPES:
            raise TypeError(f"cannot send dtype {arr.dtype}")
        return {"__nd__": arr.dtype.str, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__}")


def _hook(d: dict):
    if "__nd__" not in d:
        return d
    dtype = _DTYPES.get(d["__nd__"])
    shape = d.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError(f"bad array header {d.get('__nd__')!r} {shape!r}")
    raw = base64.b64decode(d.get("b64", ""), validate=True)
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ProtocolError("array byte count does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


class Lines:
    """Newline-framed messages out of a byte stream, in time linear in its length: a 100 MB request arrives in 64 KB
    pieces, and `bytes += piece`, rescanned for the newline each time, took a minute for one."""

    def __init__(self):
        self._buf, self._scanned = bytearray(), 0

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk

    def next(self) -> bytes | None:
        """The next complete line, without its newline; None until one has arrived."""
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buf)
            return None
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]   # deleting a bytearray's head is O(1) amortised in CPython
        self._scanned = 0
        return line


def write_all(fd: int, data: bytes, chunk: int = 1 << 20) -> None:
    """Write all of `data` to a blocking fd without copying what is left after each write."""
    view, sent = memoryview(data), 0
    while sent < len(view):
        sent += os.write(fd, view[sent:sent + chunk])


def encode(message: dict) -> bytes:
    return json.dumps(message, default=_default, allow_nan=True).encode() + b"\n"


def decode(line: bytes) -> dict:
    try:
        message = json.loads(line, object_hook=_hook)
    except ProtocolError:
        raise
    except Exception as e:  # any failure to read a message (OverflowError from a huge shape, say) is the same
        raise ProtocolError(f"unreadable message: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def digest(value) -> str:
    """A commitment to a described output: the same on both sides of the wire (arrays by dtype, shape and bytes;
    dicts by sorted key), so the parent can recompute it from what it later fetches."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, np.ndarray):
        arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        h.update(f"<{arr.dtype.str}{tuple(arr.shape)}>".encode())
        h.update(arr.tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value):
            h.update(repr(key).encode())
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode())
