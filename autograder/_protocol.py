"""The wire format between the trusted parent and a worker: one JSON object per line, arrays as base64.

Never pickle: the parent decodes what an untrusted process wrote, so only plain data and whitelisted
numeric dtypes may come back.
"""
from __future__ import annotations

import base64
import json

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
