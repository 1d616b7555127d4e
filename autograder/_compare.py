"""Judging what a worker returned: its type, device, shape, dtype and values. Runs in the trusted parent."""
from __future__ import annotations

import numpy as np

EXPECTED_TYPES = {
    "torch": ("torch.Tensor",),
    "tensorflow": ("tf.Tensor", "tf.Variable"),
    "numpy": ("numpy.ndarray",),
}
_TYPE_WORDS = {"torch": "a torch.Tensor", "tensorflow": "a tf.Tensor", "numpy": "a numpy.ndarray"}


# What the parent can tell about a wrong answer from its values alone. A part's `hints` table in course.toml keys its
# hints by these names, so the hint shown is the one for the failure found, not the part's first hint.
DIAGNOSES = {
    "scaled": "every value is the same multiple of the expected one (a sum for a mean, a missing 1/n, a factor 2)",
    "negated": "every value is the expected one with its sign flipped",
    "transposed": "the expected values, transposed",
    "zero": "all zeros where the expected values are not",
    "none": "None where a tensor is expected (nothing returned, or a gradient that was never recorded)",
    "not_tensor": "a Python or NumPy number where a tensor is expected",
    "dtype": "the right kind of tensor with the wrong dtype",
    "mutated": "the function changed one of its inputs in place",
}


class Mismatch(AssertionError):
    """One clear sentence on why an answer is not accepted; `diagnosis` (a key of DIAGNOSES) picks the part's hint for
    that failure; `details` feeds the result's numbers."""

    def __init__(self, message: str, diagnosis: str | None = None, *, because: str = "", at: tuple | None = None,
                 **details):
        super().__init__(message)
        assert diagnosis is None or diagnosis in DIAGNOSES, diagnosis
        self.diagnosis = diagnosis
        self.because = because   # the diagnosis in words ("every value is 64× the expected one"), if any
        self.at = at             # the index of the first value out of tolerance, for a value mismatch
        self.details = details


def diagnose(actual: np.ndarray, expected: np.ndarray) -> tuple[str, str] | None:
    """A simple relation between a wrong answer and the truth, as (DIAGNOSES key, words for the message), or None."""
    try:
        a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    except (TypeError, ValueError):
        return None
    if a.shape != e.shape:
        if a.ndim == 2 and a.T.shape == e.shape and np.allclose(a.T, e, rtol=1e-3, atol=1e-5):
            return "transposed", "it equals the expected value transposed"
        return None
    if not (np.isfinite(a).all() and np.isfinite(e).all()) or not np.abs(e).max(initial=0) > 0:
        return None
    if not np.abs(a).max(initial=0) > 0:
        return "zero", "it is all zeros"
    k = float(np.dot(a.ravel(), e.ravel()) / np.dot(e.ravel(), e.ravel()))   # least-squares factor a ≈ k e
    if abs(k - 1) < 1e-3 or not np.allclose(a, k * e, rtol=1e-3, atol=1e-6 * np.abs(e).max()):
        return None
    if a.size < 3:   # one or two numbers are always some multiple of the truth: believe only a whole factor (n, 1/n)
        whole = max(abs(k), 1 / abs(k))
        if abs(whole - round(whole)) > 1e-5 * whole:
            return None
    if abs(k + 1) < 1e-3:
        return "negated", "it is the expected value with its sign flipped"
    return "scaled", f"every value is {k:.4g}× the expected one"


def bad_file(fn: str, status: str) -> str | None:
    """A worker's "badfile PATH: WORDS" (autograder.worker._files) as the student's sentence, else None."""
    if not status.startswith("badfile "):
        return None
    path, _, words = status.removeprefix("badfile ").partition(": ")
    return f"{fn} left a file at {path} that is {words}"


def leaves(output: dict, count: int, what: str) -> list[dict]:
    """Split a returned value into `count` leaves: one value, or a tuple/list of `count` values."""
    if count == 1 and "items" not in output:
        return [output]
    if "items" not in output:
        raise Mismatch(f"{what} returned one {_type_name(output)}; expected a tuple of {count} values")
    if len(output["items"]) != count:
        raise Mismatch(f"{what} returned a {output['type']} of {len(output['items'])} values; expected {count}")
    return output["items"]


def _type_name(leaf: dict) -> str:
    return "None" if leaf["type"] == "None" else leaf["type"]


def tensor(leaf: dict, framework: str, device: str, what: str) -> np.ndarray:
    """The array inside a returned leaf, after checking it is the right kind of tensor on the right device."""
    wanted = EXPECTED_TYPES[framework]
    if leaf["type"] not in wanted:
        hint = ""
        if leaf["type"] == "None":
            hint = " (a missing return statement?)"
        elif leaf["type"] in ("list", "tuple"):
            hint = " (stack the values into one tensor)"
        elif leaf["type"] in ("float", "int") or leaf["type"].startswith("numpy."):
            hint = " (did you call .item() or .numpy()? keep it a tensor)"
        got = "None" if leaf["type"] == "None" else _article(leaf["type"])
        diagnosis = "none" if leaf["type"] == "None" else "not_tensor" if "(did you" in hint else None
        raise Mismatch(f"{what} is {got}, expected {_TYPE_WORDS[framework]}{hint}", diagnosis)
    if framework == "torch":
        got_cuda = leaf.get("device", "cpu").startswith("cuda")
        if got_cuda != (device == "cuda"):
            raise Mismatch(f"{what} is on {leaf.get('device')}, expected the {device} device the inputs came on")
    return leaf["array"]


def _article(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _index(idx) -> str:
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def compare(actual: np.ndarray, expected: np.ndarray, what: str, *, rtol: float, atol: float,
            actual_dtype: str | None = None, expected_dtype: str | None = None) -> dict:
    """Raise Mismatch unless `actual` matches `expected`; return the error statistics either way.

    NaN must stand exactly where the expected value is NaN, and an infinity must match in place and sign:
    neither is left to the accident of how a comparison treats them.
    """
    a_dtype = actual_dtype or actual.dtype.name
    e_dtype = expected_dtype or expected.dtype.name
    if actual.shape != expected.shape:
        found = diagnose(actual, expected)
        raise Mismatch(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
                       + (f" ({found[1]})" if found else ""), found and found[0])
    if a_dtype != e_dtype:
        why = " (NumPy's float64 leaking in?)" if a_dtype == "float64" and e_dtype == "float32" else ""
        raise Mismatch(f"{what} has dtype {a_dtype}, expected {e_dtype}{why}", "dtype")
    cast = np.complex128 if "c" in (actual.dtype.kind, expected.dtype.kind) else np.float64
    a, e = actual.astype(cast), expected.astype(cast)
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    if (a_nan != e_nan).any():
        i = tuple(np.argwhere(a_nan != e_nan)[0])
        raise Mismatch(f"{what} ({_shape(actual)} {a_dtype}): got {_num(a[i])} at index {_index(i)}, "
                       f"expected {_num(e[i])}"
                       f" ({int((a_nan & ~e_nan).sum())} unexpected NaN, {int((e_nan & ~a_nan).sum())} missing NaN)",
                       at=i, max_abs_err=float("nan"), rtol=rtol, atol=atol)
    a_inf, e_inf = np.isinf(a), np.isinf(e)
    inf_bad = (a_inf | e_inf) & (a != e)
    if inf_bad.any():
        i = tuple(np.argwhere(inf_bad)[0])
        raise Mismatch(f"{what} ({_shape(actual)} {a_dtype}): got {_num(a[i])} at index {_index(i)}, "
                       f"expected {_num(e[i])}",
                       at=i, max_abs_err=float("inf"), rtol=rtol, atol=atol)
    finite = ~(a_nan | a_inf | e_inf)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where `finite` is False anyway
        err = np.where(finite, np.abs(a - e), 0.0)
    scale = np.abs(e)
    rel = np.divide(err, scale, out=np.zeros_like(err, dtype=np.float64), where=scale > 0)
    stats = {"max_abs_err": float(err.max(initial=0.0)), "max_rel_err": float(rel.max(initial=0.0)),
             "rtol": rtol, "atol": atol}
    bad = err > atol + rtol * scale
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        found = diagnose(a, e) if cast is np.float64 else None
        raise Mismatch(
            f"{what} ({_shape(actual)} {a_dtype}): {int(bad.sum())} of {bad.size} values differ beyond "
            f"rtol={rtol:g}, atol={atol:g}; max abs err {stats['max_abs_err']:.3g}, max rel err "
            f"{stats['max_rel_err']:.3g}; first at index {_index(i)}: got {_num(a[i])}, expected {_num(e[i])}"
            + (f" ({found[1]})" if found else ""), found and found[0], because=found[1] if found else "", at=i,
            **stats)
    return stats


def _shape(arr: np.ndarray) -> str:
    return "shape " + str(tuple(arr.shape))


def _num(x) -> str:
    return f"{x:.7g}" if np.isrealobj(x) else str(x)
