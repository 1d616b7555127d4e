"""Checks for module 03, "Debugging with pdb".

Part A: the student fixes a buggy PyTorch attention and a buggy TensorFlow standardisation (checked by behaviour
against float64 NumPy, on inputs that trip each planted bug). Part B: the student writes pdb commands; the grader
runs its own copy of a buggy program, seeded afresh, under pdb in a fresh isolated worker and reads the transcript.
Part C: the student's anomaly-tool functions name the op that makes the first NaN in models the grader builds.
"""
from __future__ import annotations

import re

import numpy as np

from autograder._compare import Mismatch, tensor
from autograder._context import GraderError

# -- Part C: the grader's models. One structure for every model: four ops that can make a NaN, and parameters
# (chosen in the parent for each input) that push exactly one of them out of its domain. Reading the source
# cannot tell which op it is; running the model under the anomaly tools can.
HELPERS = ['''
def _clash_torch_nan_model(W, p_sqrt, p_acos, p_div, p_pow):
    W = torch.as_tensor(W)

    def model(x):
        h = x @ W.to(x.device)
        a = torch.sqrt(h - p_sqrt)
        b = torch.acos(torch.tanh(h) * p_acos)
        z = torch.relu(h - p_div)
        g = z / z.sum(dim=1, keepdim=True)
        e = torch.pow(h - p_pow, 1.5)
        return 0.5 * a + b + 2.0 * g + 0.1 * e
    return model


def _clash_torch_nan(x, W, p_sqrt, p_acos, p_div, p_pow):
    return torch_first_nan_op(_clash_torch_nan_model(W, p_sqrt, p_acos, p_div, p_pow), x)
''', '''
def _clash_tf_nan_model(W, p_sqrt, p_acos, p_div, p_pow):
    W = tf.constant(W)

    def model(x):
        h = x @ W
        a = tf.sqrt(h - p_sqrt)
        b = tf.acos(tf.tanh(h) * p_acos)
        z = tf.nn.relu(h - p_div)
        g = z / tf.reduce_sum(z, axis=1, keepdims=True)
        e = tf.pow(h - p_pow, 1.5)
        return 0.5 * a + b + 2.0 * g + 0.1 * e
    return model


def _clash_tf_nan(x, W, p_sqrt, p_acos, p_div, p_pow):
    return tf_first_nan_op(_clash_tf_nan_model(W, p_sqrt, p_acos, p_div, p_pow), x)
''']

# -- Part B: the grader's copy of the program the student debugs (the notebook shows the same text). The seed
# line is replaced on every run, so the printed tensor changes and cannot be written into the answer.
PDB_FUNCTION, PDB_NAME, PDB_LINE = "softmax_rows", "shifted", 9
PDB_PROGRAM = '''import torch

SEED = 0


def softmax_rows(x, w):
    logits = x @ w
    shifted = logits - logits.max()
    weights = torch.exp(shifted) / torch.exp(shifted).sum(dim=0)
    return weights


def main():
    torch.manual_seed(SEED)
    x = torch.randn(4, 3)
    w = torch.randn(3, 5)
    return softmax_rows(x, w)
'''
_LOCATION = re.compile(r"> \S*program\.py\((\d+)\)(\w+)\(\)")


# -- Part A: PyTorch attention ------------------------------------------------------------------------------
def _softmax(s: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _attention(q, k, v, scale: bool = True, axis: int = -1) -> np.ndarray:
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = q @ k.T / (np.sqrt(q.shape[1]) if scale else 1.0)
    return _softmax(s, axis) @ v


def _attention_problem(rng, big: bool = False, m: int | None = None):
    n, d, e = int(rng.integers(3, 9)), int(rng.integers(4, 17)), int(rng.integers(2, 7))
    m = m or int(rng.integers(3, 11))
    while True:
        q = rng.normal(size=(n, d)).astype(np.float32) * (60.0 if big else 1.0)
        k = rng.normal(size=(m, d)).astype(np.float32)
        v = rng.normal(size=(m, e)).astype(np.float32)
        if not big or (q.astype(np.float64) @ k.T.astype(np.float64) / np.sqrt(d)).max() > 120:  # exp overflows float32
            return [q, k, v]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5)


def torch_fix(ctx):
    fn = "torch_attention"
    problems = [(_attention_problem(ctx.rng), "ordinary scores") for _ in range(3)]
    problems.append((_attention_problem(ctx.rng, m=1), "a single key"))
    problems.append((_attention_problem(ctx.rng, big=True), "large scores (q @ k.T / sqrt(d) above 120)"))
    for args, case in problems:
        out = ctx.call(fn, args, "torch")
        got = tensor(out, "torch", ctx.device, fn) if out.get("type") != "tuple" else None
        want = _attention(*args)
        if got is not None and got.shape == want.shape and not _close(got, want):
            if np.isnan(got).any():
                ctx.fail(f"{fn} returns NaN for {case}: exp(scores) overflows float32 above ~88, and inf / inf is "
                         "NaN. Subtract each row's max before exp (or use torch.softmax), which leaves the softmax "
                         "unchanged")
            if case.startswith("large") and np.isfinite(got).all():
                ctx.fail(f"{fn} matches on ordinary inputs but is wrong for {case}, though it returns no NaN: "
                         "replacing NaN (nan_to_num) hides the overflow without fixing the values. Subtract each "
                         "row's max before exp, or use torch.softmax")
            if _close(got, _attention(*args, scale=False)):
                ctx.fail(f"{fn} does not scale the scores: d ** (1 // 2) is d ** 0 == 1, because // is integer "
                         "division. Divide by d ** 0.5 (math.sqrt(d))")
            if _close(got, _attention(*args, axis=0)) or _close(got, _attention(*args, scale=False, axis=0)):
                ctx.fail(f"{fn} normalises over the queries (dim 0): each query's weights over the keys must sum "
                         "to 1, so the softmax runs over the last dimension (dim=-1)")
        ctx.same(out, ctx.truth(want), "torch", ["output"], f"{fn} vs float64 NumPy ({case})", want_framework="any")
    return "matches float64 NumPy on 5 inputs, a single key and overflowing scores included"


# -- Part A: TensorFlow standardisation ---------------------------------------------------------------------
def _standardize(x: np.ndarray, rows_mean: bool = False) -> np.ndarray:
    x = x.astype(np.float64)
    c = x - (x.mean(axis=1) if rows_mean else x.mean(axis=0, keepdims=True))
    std = c.std(axis=0)
    return c / np.where(std < 1e-6, 1.0, std)


def _standardize_problem(rng, n: int, d: int) -> np.ndarray:
    x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d) * 3).astype(np.float32)
    cols = rng.permutation(d)[:2]
    x[:, cols[0]] = np.float32(rng.integers(-4, 5) + 0.5)               # a constant column: std 0
    x[:, cols[1]] = (rng.normal(size=n) * 1e-7).astype(np.float32)      # a tiny column: std ~1e-7, only centred
    return x


def tf_fix(ctx):
    fn = "tf_standardize"
    try:
        ctx.introspect("tracing_count", fn)  # raises "... is a plain Python function, not a tf.function"
    except Mismatch as m:
        if "not a tf.function" not in str(m):
            raise
        ctx.fail(f"{m}: keep @tf.function. Dropping the graph hides the Python `if` on a tensor instead of fixing "
                 "it; choose the divisor per column with tf.where(std < 1e-6, tf.ones_like(std), std)")
    shapes = [(int(ctx.rng.integers(6, 20)), int(ctx.rng.integers(3, 6))) for _ in range(2)]
    shapes.insert(0, (shapes[0][1] + 3,) * 2)  # square first: a row mean broadcasts silently here
    for n, d in shapes:
        x = _standardize_problem(ctx.rng, n, d)
        out = ctx.call(fn, [x], "tensorflow")
        want = _standardize(x)
        if out.get("type") in ("tf.Tensor", "tf.Variable"):
            got = out["array"]
            if got.shape == want.shape and not _close(got, want):
                if np.isnan(got).any():
                    ctx.fail(f"{fn} returns NaN for a constant column (std 0): 0 / 0. Divide such columns by 1 "
                             "(tf.where(std < 1e-6, 1.0, std)) rather than by their std")
                if n == d and _close(got, _standardize(x, rows_mean=True)):
                    ctx.fail(f"{fn} subtracts the row means: reduce_mean(x, axis=1) has shape (n,), which "
                             "broadcasts across the columns without an error when n == d. Take the mean over "
                             "axis 0 (keepdims=True)")
                small = np.abs(want).max(axis=0) < 1e-3
                if _close(got[:, ~small], want[:, ~small]):
                    ctx.fail(f"{fn} is wrong only in columns whose std is below 1e-6 (a tiny-valued column): they "
                             "must be centred but not divided. Replacing NaN with 0 only fixes the constant column; "
                             "choose the divisor per column with tf.where(std < 1e-6, 1.0, std)")
        ctx.same(out, ctx.truth(want), "tensorflow", ["output"], f"{fn} vs float64 NumPy ({n}x{d} input)",
                 want_framework="any")
    return "still a tf.function, and matches float64 NumPy on 3 shapes, constant and tiny columns included"


# -- Part B: pdb commands -----------------------------------------------------------------------------------
def _printed_after(transcript: str, index: int) -> str:
    """What the pdb command at prompt number `index` printed."""
    parts = transcript.split("(Pdb) ")
    return parts[index].strip() if len(parts) > index else ""


def pdb_shifted(ctx):
    commands = ctx.text(ctx.call("pdb_commands", [], "numpy"), "pdb_commands()")
    seed = int(ctx.rng.integers(1, 1 << 31))
    program = PDB_PROGRAM.replace("SEED = 0", f"SEED = {seed}")
    # In one fresh isolated worker: first the grader's own commands (what `p shifted` prints at the right place),
    # answered before the student's commands run there on the same program.
    mine, transcript = ctx.pdb_transcripts(program, [f"b program.py:{PDB_LINE}\nc\np {PDB_NAME}\nc\n", commands],
                                           ["torch"])
    want = _printed_after(mine, 3)
    if not want.startswith("tensor("):
        raise GraderError(f"the grader's own pdb run printed {want[:80]!r}")
    ctx.details["transcript"] = transcript[-2000:]
    stops = [(m.start(), int(m.group(1)), m.group(2)) for m in _LOCATION.finditer(transcript)]
    inside = [s for s in stops if s[2] == PDB_FUNCTION]
    if not inside:
        seen = sorted({f"{f}() line {n}" for _, n, f in stops})
        ctx.fail(f"your commands never stopped inside {PDB_FUNCTION}() (pdb stopped at: {', '.join(seen) or 'nothing'}). "
                 f"pdb starts at main()'s first line: set a breakpoint in {PDB_FUNCTION} (b {PDB_FUNCTION}, or "
                 f"b program.py:LINE) and continue with c")
    at = transcript.find(want)
    if at < 0:
        if f"NameError: name '{PDB_NAME}' is not defined" in transcript:
            ctx.fail(f"pdb stopped in {PDB_FUNCTION}() before {PDB_NAME} was assigned (NameError): a breakpoint "
                     f"on a line stops before that line runs. Step past the assignment with n, or break on the "
                     f"line after it")
        ctx.fail(f"your commands stopped inside {PDB_FUNCTION}() but the transcript never shows the value of "
                 f"{PDB_NAME} (print it with p {PDB_NAME}; printing another variable, or a converted copy such as "
                 f".numpy(), does not count)")
    before = [s for s in stops if s[0] < at]
    if not before or before[-1][2] != PDB_FUNCTION:
        ctx.fail(f"the transcript shows {PDB_NAME}'s value, but not while stopped inside {PDB_FUNCTION}()")
    return f"stopped in {PDB_FUNCTION}() at line {before[-1][1]} and printed {PDB_NAME} (grader seed {seed})"


# -- Part C: the op that makes the first NaN ----------------------------------------------------------------
KINDS = ("sqrt", "acos", "div", "pow")
_SYNONYMS = {"realdiv": "div", "truediv": "div", "divide": "div", "arccos": "acos", "power": "pow"}


def _op_name(text: str) -> str:
    s = text.strip().lower()
    s = re.sub(r"^(torch\.|tf\.math\.|tf\.|aten\.|aten::)", "", s)
    s = re.sub(r"\.(default|tensor|scalar|tensor_scalar|tensor_tensor)$", "", s)
    s = re.sub(r"backward\d*$", "", s)
    s = re.sub(r"[^a-z0-9]", "", s)
    return _SYNONYMS.get(s, s)


def _nan_problem(rng, kind: str) -> list:
    """x, W and the four parameters: only `kind` leaves its domain, with margins far above float32 rounding."""
    while True:
        n, d = int(rng.integers(4, 9)), int(rng.integers(3, 7))
        x = rng.normal(size=(n, d)).astype(np.float32)
        W = rng.normal(size=(d, d)).astype(np.float32)
        h = x.astype(np.float64) @ W.astype(np.float64)
        row_max = h.max(axis=1)
        safe = {"sqrt": float(h.min() - 1.0), "acos": 0.5, "div": float(row_max.min() - 0.5),
                "pow": float(h.min() - 1.0)}
        bad = {"sqrt": float(np.median(h)), "acos": 3.0, "div": float(row_max.min() + 0.5),
               "pow": float(np.median(h))}
        ok = {"sqrt": (h < bad["sqrt"] - 0.1).any(), "acos": (np.abs(np.tanh(h)) > 0.4).any(),
              "div": (row_max < bad["div"] - 0.1).any() and (row_max > bad["div"] + 0.1).any(),
              "pow": (h < bad["pow"] - 0.1).any()}
        if ok[kind]:
            params = [bad[k] if k == kind else safe[k] for k in KINDS]
            return [x, W, *params]


def _named(ctx, fn: str, helper: str, framework: str, kind: str, args: list) -> str:
    try:
        out = ctx.call(helper, args, framework)
    except Mismatch as m:  # name the student's function, not the grader's helper that called it
        raise Mismatch(str(m).replace(helper, fn)) from None
    if out.get("type") == "None":
        how = ("Anomaly mode checks the backward pass only: make x require grad and call .backward() on a scalar "
               "(model_fn(x).sum()) inside detect_anomaly" if framework == "torch" else
               "Call tf.debugging.enable_check_numerics() before running model_fn(x), and read the op from the error")
        ctx.fail(f"{fn} returned None for a model whose output holds NaN: no error reached your code. {how}")
    text = ctx.text(out, f"{fn}(...)")
    name = _op_name(text)
    ctx.details.setdefault("answers", []).append(text[:80])
    if name == kind:
        return name
    if len(text) > 60:
        ctx.fail(f"{fn} returned {len(text)} characters ({text[:60]!r}...): return only the op's name, e.g. the "
                 f"name inside the error message")
    ctx.fail(f"{fn} returned {text!r} for a model whose first NaN comes from another op. Every model the grader "
             f"builds has the same ops (sqrt, acos, a division and pow among them) and different inputs push a "
             f"different one out of its domain: run the model under the anomaly tool and read the op from its "
             f"error, rather than returning a fixed name")


def _nan_part(ctx, fn: str, helper: str, framework: str, kinds: list[str]) -> str:
    for kind in kinds:
        _named(ctx, fn, helper, framework, kind, _nan_problem(ctx.rng, kind))
    return f"named the right op for {len(kinds)} models whose NaN comes from {', '.join(sorted(kinds))}"


def torch_nan(ctx):
    kinds = list(ctx.rng.permutation(["sqrt", "acos", "div"]))
    return _nan_part(ctx, "torch_first_nan_op", "_clash_torch_nan", "torch", kinds)


def tf_nan(ctx):
    kinds = list(ctx.rng.permutation(["sqrt", "acos", "div"]))
    return _nan_part(ctx, "tf_first_nan_op", "_clash_tf_nan", "tensorflow", kinds)


def nan_agree(ctx):
    # Twin models with the same weights and inputs: the backward-pass tool (PyTorch) and the forward-pass tool
    # (TensorFlow) must blame the same op, including pow, which the single-framework parts never use.
    kinds = ["pow", str(ctx.rng.choice(["sqrt", "acos", "div"]))]
    for kind in kinds:
        args = _nan_problem(ctx.rng, kind)
        a = _named(ctx, "torch_first_nan_op", "_clash_torch_nan", "torch", kind, args)
        b = _named(ctx, "tf_first_nan_op", "_clash_tf_nan", "tensorflow", kind, args)
        if a != b:  # unreachable while both equal kind; kept as the statement of what this part checks
            ctx.fail(f"PyTorch blamed {a!r} and TensorFlow {b!r} on twin models")
    return f"PyTorch's detect_anomaly and TensorFlow's check_numerics blame the same op ({', '.join(kinds)})"


PARTS = {f.__name__: f for f in (torch_fix, tf_fix, pdb_shifted, torch_nan, tf_nan, nan_agree)}
