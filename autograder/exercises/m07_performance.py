"""Checks for module 07, "Performance, on CPU and GPU".

The student writes a timer that reports the median of warmed-up, synchronised calls; a training loop that never
syncs with the host inside the loop; one mixed-precision training step in each framework; and a graph-mode version
of an eager function that beats it by a threshold.

Where the truth comes from:
- timer: a grader workload (a slow warm-up, periodic outliers, and on CUDA an asynchronous matmul burst) whose steady
  state is measured by the parent's own clock on CPU and by CUDA events in the clean reference worker on a GPU;
- no_sync_loop: float64 NumPy for the losses and weights; syncs are counted by the grader's helper (patched Tensor
  methods called from the notebook's code, and torch.cuda.set_sync_debug_mode("warn") on a GPU, beyond
  the syncs the grader's own clean loop makes under the same mode, run first);
- mixed precision: float64 NumPy for one SGD step, with tolerances measured for bfloat16 (see MIXED_TOL); the dtypes
  the layers computed in are read by the grader's hooks (torch) and the layers' compute dtypes (Keras);
- graph_speedup: ctx.speedup against the course's eager BASELINE in the reference worker.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from autograder._compare import Mismatch, compare, leaves, tensor

# The course's public eager baseline for the timed part: the same chain the notebook shows, run eagerly in the clean
# reference worker.
# The eager chain, one copy: the BASELINE's and the grader's helper's (the notebook's could be edited).
_CHAIN_BODY = '''
    for _ in range(5):
        x = x * 0.8 + 0.3
        x = torch.clamp(x, -2.0, 2.0)
        x = torch.abs(x) * 0.9 - 0.5
        x = torch.relu(x) + 0.1
        x = torch.square(x)
    return x
'''

BASELINE = '''
import torch

def baseline_chain(x):
CHAIN_BODY


def baseline_chain_sum(x):
    """What is timed: the chain, summed (so the timed request returns one number, not 1024 to encode)."""
    return baseline_chain(x).sum()
'''.replace("CHAIN_BODY\n", _CHAIN_BODY[1:])

HELPERS = [
    '''
import sys as _clash_sys
import time as _clash_time
import warnings as _clash_warnings
from os import path as _clash_os_path

_CLASH_DEV = "cuda" if torch.cuda.is_available() else "cpu"


class _ClashWorkload:
    """The grader's workload for the timer. Call k costs `base_s` of host time, plus `warm_s` while k < n_warm
    (a warm-up cost: caches, allocator, compilation) and `outlier_s` on every `every`-th call after that (an outlier:
    another process, a page fault, a garbage collection). On CUDA each call also queues `gpu_reps` large matmuls
    that run asynchronously: a timer that does not synchronise sees only their launch."""

    def __init__(self, base_s, warm_s, outlier_s, n_warm, every, gpu_reps):
        self.base_s, self.warm_s, self.outlier_s = base_s, warm_s, outlier_s
        self.n_warm, self.every, self.gpu_reps, self.calls = n_warm, every, gpu_reps, 0
        self.a = torch.randn(4096, 4096, device="cuda") / 128 if (_CLASH_DEV == "cuda" and gpu_reps) else None

    def cost(self, k):
        if k < self.n_warm:
            return self.base_s + self.warm_s
        return self.base_s + (self.outlier_s if (k - self.n_warm) % self.every == self.every // 2 else 0.0)

    def __call__(self, x):
        k, self.calls = self.calls, self.calls + 1
        _clash_time.sleep(self.cost(k))
        y = x * 2
        if self.a is not None:
            b = self.a
            for _ in range(self.gpu_reps):
                b = self.a @ b
            y = y + b[0, 0]
        return y


def _clash_time_it(base_s, warm_s, outlier_s, warmup, every, repeats, gpu_reps):
    """The student's time_call on the grader's workload; returns what it reported and how many calls it made."""
    work = _ClashWorkload(base_s, warm_s, outlier_s, warmup, every, gpu_reps)
    x = torch.ones(8, device=_CLASH_DEV)
    reported = time_call(work, (x,), warmup, repeats)
    if _CLASH_DEV == "cuda":
        torch.cuda.synchronize()
    return reported, work.calls


_clash_steady_work = {}

def _clash_steady(base_s, gpu_reps, n):
    """n steady-state calls of the workload, synchronised: the parent times this request on its own clock."""
    key = (base_s, gpu_reps)
    if key not in _clash_steady_work:
        _clash_steady_work[key] = _ClashWorkload(base_s, 0.0, 0.0, 0, 1 << 30, gpu_reps)
    x = torch.ones(8, device=_CLASH_DEV)
    for _ in range(n):
        _clash_steady_work[key](x)
    if _CLASH_DEV == "cuda":
        torch.cuda.synchronize()
    return None


def _clash_steady_events(base_s, gpu_reps, n):
    """On CUDA: the median of n steady-state calls timed with CUDA events (after two warm-up calls), in seconds."""
    work = _ClashWorkload(base_s, 0.0, 0.0, 0, 1 << 30, gpu_reps)
    x = torch.ones(8, device="cuda")
    times = []
    for i in range(n + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        work(x)
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def _clash_gpu_reps(target_s):
    """How many 4096x4096 matmuls take about target_s on this GPU (CUDA events), and how long they take."""
    a = torch.randn(4096, 4096, device="cuda") / 128
    a @ a
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        a @ a
    end.record()
    end.synchronize()
    one = start.elapsed_time(end) / 1000 / 5
    reps = int(min(200, max(1, round(target_s / max(one, 1e-6)))))
    return reps, reps * one


def _clash_mlp(W1, b1, W2, b2):
    """The grader's model, Linear-ReLU-Linear, with the grader's float32 weights, on the worker's device."""
    model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]), torch.nn.ReLU(),
                                torch.nn.Linear(W2.shape[1], W2.shape[0])).to(W1.device)
    with torch.no_grad():
        for p, v in zip(model.parameters(), (W1, b1, W2, b2)):
            p.copy_(v)
    return model


def _clash_weights(model):
    return tuple(p.detach().clone() for p in model.parameters())


_CLASH_SYNCING = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__format__", "__repr__",
                  "__str__")


def _clash_counting_syncs(counts):
    """Patch the Tensor methods that make the host wait for the device; count calls made from the notebook's code.
    Returns a function that restores them."""
    saved = {name: torch.Tensor.__dict__.get(name, None) for name in _CLASH_SYNCING}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            caller = _clash_sys._getframe(1).f_code.co_filename
            if caller.startswith("<clash ") and not caller.startswith("<clash course"):
                counts[name] = counts.get(name, 0) + 1
            return original(self, *args, **kwargs)
        return counted

    for name in _CLASH_SYNCING:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))

    def restore():
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
    return restore


def _clash_cuda_syncs(run):
    """run() under torch.cuda.set_sync_debug_mode("warn") on a GPU: its result and where each synchronising CUDA
    operation was called from ("cell 9, line 6" for the notebook's code, else "file.py:line")."""
    if _CLASH_DEV != "cuda":
        return run(), []
    with _clash_warnings.catch_warnings(record=True) as caught:
        _clash_warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    where = [f"{w.filename[7:-1]}, line {w.lineno}" if w.filename.startswith("<clash ")
             else f"{_clash_os_path.basename(w.filename)}:{w.lineno}"
             for w in caught if "synchroniz" in str(w.message).lower()]
    return result, where


def _clash_clean_loop(model, optimizer, batches):
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _clash_train(W1, b1, W2, b2, x, y, steps, lr):
    """The student's train_steps on the grader's model and batches, with every host sync counted. On a GPU the
    grader's own clean loop runs first under the same sync debug mode: a sync that PyTorch makes by itself (the
    first step's, or one inside the optimizer) is not the student's, so only syncs beyond the clean loop's count."""
    batches = list(zip(x.chunk(steps), y.chunk(steps)))
    clean_model = _clash_mlp(W1, b1, W2, b2)
    _, clean = _clash_cuda_syncs(lambda: _clash_clean_loop(
        clean_model, torch.optim.SGD(clean_model.parameters(), lr=lr), batches))
    model = _clash_mlp(W1, b1, W2, b2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    counts = {}
    restore = _clash_counting_syncs(counts)
    try:
        losses, warned = _clash_cuda_syncs(lambda: train_steps(model, optimizer, batches))
    finally:
        restore()
    report = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    cuda_report = ""
    if len(warned) > len(clean):
        first = next((w for w in warned if w not in clean), warned[0])
        cuda_report = (f"{len(warned) - len(clean)} more synchronising CUDA operation(s) than a clean loop's "
                       f"{len(clean)} (torch.cuda.set_sync_debug_mode), first at {first}")
    return (losses, *_clash_weights(model), report, cuda_report, ", ".join(clean) or "none")


def _clash_autocast(W1, b1, W2, b2, x, y, lr):
    """The student's autocast_step on the grader's model; forward hooks record the dtype each Linear produced."""
    model = _clash_mlp(W1, b1, W2, b2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(_CLASH_DEV, init_scale=1024.0, enabled=_CLASH_DEV == "cuda")
    produced = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: produced.append(str(out.dtype).removeprefix("torch.")))
             for m in model if isinstance(m, torch.nn.Linear)]
    try:
        out = autocast_step(model, optimizer, scaler, x, y)
    finally:
        for h in hooks:
            h.remove()
    return (out, *_clash_weights(model), ",".join(produced))


_clash_fast = {}

def _clash_prepare_compile():
    """Import inductor before the timed part's first call (each call has its own time limit), and suit it to the
    grader's sandbox: a fresh, empty cache every run, so precompiled headers (which pay off across runs), test
    builds of each vector ISA (trust the CPU's flags instead) and a pool of compile processes would only cost time."""
    import torch._inductor.config as config
    config.cpp_cache_precompile_headers = False
    config.cpp.vec_isa_ok = True
    config.compile_threads = 1
    import torch._inductor.compile_fx  # noqa: F401
    return None


def _clash_chain(x):
    """The grader's own copy of the notebook's chain (the notebook's copy could be edited)."""
CHAIN_BODY


def _clash_fast_chain(x):
    if "f" not in _clash_fast:
        _clash_fast["f"] = make_fast(_clash_chain)
    return _clash_fast["f"](x)


def _clash_fast_chain_sum(x):
    return _clash_fast_chain(x).sum()
'''.replace("CHAIN_BODY\n", _CHAIN_BODY[1:]),
    '''
def _clash_keras_mixed(W1, b1, W2, b2, x, y, lr):
    """The student's keras_mixed_step with the grader's model factory; reports the layers' compute dtypes and the
    global policy the step left behind, then restores float32 for whatever runs next."""
    made = []

    def make_model():
        model = tf.keras.Sequential([tf.keras.Input((W1.shape[1],)),
                                     tf.keras.layers.Dense(W1.shape[0], activation="relu"),
                                     tf.keras.layers.Dense(W2.shape[0])])
        model.set_weights([tf.transpose(W1).numpy(), b1.numpy(), tf.transpose(W2).numpy(), b2.numpy()])
        made.append(model)
        return model

    try:
        out = keras_mixed_step(make_model, x, y, lr)
        policy_after = tf.keras.mixed_precision.global_policy().name
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    if not made:
        return (out, None, None, None, None, "", policy_after)
    model = made[-1]
    k1, c1, k2, c2 = (v for v in model.get_weights())
    compute = ",".join(layer.compute_dtype for layer in model.layers)
    return (out, tf.transpose(k1), tf.constant(c1), tf.transpose(k2), tf.constant(c2), compute, policy_after)
''',
]

# -- tolerances -----------------------------------------------------------------------------------------------------
# Measured on 25 random problems of this shape (d=20, h=32, c=5, n=64, lr=0.5), torch autocast(bfloat16) and Keras
# mixed_bfloat16 on CPU against float64 NumPy: worst |error| of the logits 0.017 (torch) / 0.027 (Keras), of the loss
# 0.0006 / 0.0037, of the updated weights 0.0049 / 0.0061. bfloat16 keeps 8 significant bits, so every rounding costs
# up to 2^-9 ≈ 2e-3 relative; a 20-term dot product of rounded operands lands near 1e-2 of its terms' size. The
# tolerances below are 2-3x the worst measured error; float16 (11 bits, on CUDA) is well inside them. A float32 step
# is inside them too, so "it ran in low precision" is checked separately (the dtypes), not by the size of the error.
MIXED_TOL = {"logits": (2 ** -6, 0.06), "loss": (2 ** -6, 0.01), "weights": (2 ** -7, 0.015)}  # (rtol, atol)
LOW = ("bfloat16", "float16")

# -- the timer's workload -------------------------------------------------------------------------------------------
BAND = (0.67, 1.5)   # the student's median over the grader's steady-state time


def _costs(base, warm, outlier, n_warm, every, count):
    out = []
    for k in range(count):
        if k < n_warm:
            out.append(base + warm)
        else:
            out.append(base + (outlier if (k - n_warm) % every == every // 2 else 0.0))
    return out


def _seconds(ctx, item: dict, what: str) -> float:
    if item.get("type") in ("float", "int") or item.get("type", "").startswith("numpy."):
        return float(np.asarray(item["array"]))
    if item.get("type") in ("torch.Tensor",) and np.asarray(item["array"]).size == 1:
        return float(np.asarray(item["array"]))
    ctx.fail(f"{what} returned {item.get('type')}; return the median time per call in seconds, as a Python float")


def _steady_on_parent_clock(ctx, base, reps, n=5, rounds=5) -> float:
    """The parent's clock around requests of 1 and of 1 + n synchronised steady-state calls: the difference over n is
    the cost of one call, without the request's round trip."""
    ctx.call("_clash_steady", [base, reps, 1], "torch")  # the first call builds the workload
    one, many = [], []
    for _ in range(rounds):
        for count, times in ((1, one), (1 + n, many)):
            t0 = time.perf_counter()
            ctx.call("_clash_steady", [base, reps, count], "torch")
            times.append(time.perf_counter() - t0)
    return (statistics.median(many) - statistics.median(one)) / n


def _steady_on_cuda_events(ctx, base, reps) -> float:
    if ctx.has_reference:
        out = ctx.call_reference("_clash_steady_events", [base, reps, 5], "torch")
    else:
        out = ctx.call("_clash_steady_events", [base, reps, 5], "torch")
    return float(np.asarray(out["array"]))


def timer(ctx):
    cuda = ctx.device == "cuda"
    reps, gpu_s = 0, 0.0
    if cuda:  # each call also queues ~20 ms of matmuls, which an unsynchronised timer does not see
        out = (ctx.call_reference if ctx.has_reference else ctx.call)("_clash_gpu_reps", [0.02], "torch")
        reps, gpu_s = int(np.asarray(out["items"][0]["array"])), float(np.asarray(out["items"][1]["array"]))
    clock = "CUDA events in the grader's process" if cuda else "the grader's clock"
    verdicts = []
    for warmup, repeats in ((5, 9), (6, 11)):
        base = float(np.round(ctx.rng.uniform(0.004, 0.007) if cuda else ctx.rng.uniform(0.010, 0.016), 4))
        steady = base + gpu_s  # the warm-up and outlier costs scale with the whole call, GPU work included
        warm, outlier, every = 6 * steady, 8 * steady, 4
        got = ctx.call("_clash_time_it", [base, warm, outlier, warmup, every, repeats, reps], "torch")
        reported_item, calls_item = leaves(got, 2, "time_call")
        reported = _seconds(ctx, reported_item, "time_call")
        calls = int(np.asarray(calls_item["array"]))
        truth = _steady_on_cuda_events(ctx, base, reps) if cuda else _steady_on_parent_clock(ctx, base, reps)
        if truth < 0.8 * base:
            ctx.fail(f"the steady-state call took {truth * 1e3:.2f} ms, less than the {base * 1e3:.1f} ms it sleeps: "
                     f"something in the notebook changed time.sleep or the clocks")
        ratio = reported / truth
        ctx.details.update(reported_ms=reported * 1e3, steady_ms=truth * 1e3, ratio=ratio, clock=clock)
        if not BAND[0] <= ratio <= BAND[1]:
            ctx.fail(_diagnose(reported, truth, base, warm, outlier, warmup, every, repeats, cuda, clock))
        if calls < warmup + repeats:
            ctx.fail(f"time_call called fn {calls} times; with warmup={warmup} and repeats={repeats} it must call it "
                     f"{warmup + repeats} times (the warm-up calls first, untimed)")
        verdicts.append(f"{reported * 1e3:.1f} ms vs {truth * 1e3:.1f} ms")
    return (f"your medians agree with {clock} ({'; '.join(verdicts)}) despite warm-up costs and outliers"
            + ("" if cuda else "; on a GPU the grader also queues asynchronous matmuls and uses CUDA events"))


def _diagnose(reported, truth, base, warm, outlier, warmup, every, repeats, cuda, clock) -> str:
    ms = lambda s: f"{s * 1e3:.1f} ms"  # noqa: E731
    head = f"time_call reported {ms(reported)} per call, but the steady state takes {ms(truth)} ({clock})"
    if reported < BAND[0] * truth:
        if cuda:
            return (f"{head}: it under-reports. CUDA kernels run asynchronously, so a host clock read right after the "
                    f"call measures only their launch: call torch.cuda.synchronize() before reading the clock, or time "
                    f"with torch.cuda.Event(enable_timing=True) and end.synchronize()")
        return (f"{head}: it under-reports. Use a wall clock (time.perf_counter, not time.process_time, which does "
                f"not count waiting), and report seconds per call")
    extra = truth - base  # the round trip or launch cost the parent's measurement includes
    seq = _costs(base, warm, outlier, warmup, every, warmup + repeats)
    timed = seq[warmup:]
    cold = seq[:repeats]
    n_out = sum(1 for c in timed if c > base + 1e-9)
    candidates = {
        "mean": (statistics.mean(timed) + extra,
                 f"that is the MEAN of the timed calls ({ms(statistics.mean(timed) + extra)}): {n_out} of the "
                 f"{repeats} timed calls were outliers of {ms(base + outlier)}, and outliers pull a mean up. Report "
                 f"the median (statistics.median), which ignores them"),
        "cold": (statistics.median(cold) + extra,
                 f"that is close to what the first calls cost ({ms(base + warm)}): the first {warmup} calls pay a "
                 f"warm-up cost (caches, allocator, compilation). Call fn `warmup` times untimed before you time"),
        "cold mean": (statistics.mean(cold) + extra,
                      f"that is close to the mean of the first {repeats} calls ({ms(statistics.mean(cold) + extra)}), "
                      f"warm-up calls and outliers included: call fn `warmup` times untimed first, then report the "
                      f"median of the timed calls"),
    }
    name = min(candidates, key=lambda k: abs(np.log(reported / candidates[k][0])))
    if abs(np.log(reported / candidates[name][0])) > np.log(1.5):
        return f"{head}: ratio {reported / truth:.2f}, outside {BAND[0]}-{BAND[1]}"
    return f"{head}: {candidates[name][1]}"


# -- the training loop without syncs --------------------------------------------------------------------------------
def _mlp_problem(rng, n=64, d=20, h=32, c=5):
    W1 = (rng.normal(size=(h, d)) / np.sqrt(d)).astype(np.float32)
    b1 = (0.1 * rng.normal(size=h)).astype(np.float32)
    W2 = (rng.normal(size=(c, h)) / np.sqrt(h)).astype(np.float32)
    b2 = (0.1 * rng.normal(size=c)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, c, size=n).astype(np.int64)
    return W1, b1, W2, b2, x, y


def _truth_sgd(W1, b1, W2, b2, x, y, steps, lr):
    """float64 NumPy: `steps` SGD steps of cross-entropy on consecutive equal chunks; the losses, the logits of the
    first step, and the final weights."""
    W1, b1, W2, b2 = (a.astype(np.float64) for a in (W1, b1, W2, b2))
    losses, first_logits = [], None
    for xb, yb in zip(np.array_split(x.astype(np.float64), steps), np.array_split(y, steps)):
        m = len(yb)
        z = xb @ W1.T + b1
        a = np.maximum(z, 0)
        logits = a @ W2.T + b2
        first_logits = logits if first_logits is None else first_logits
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        losses.append(-np.mean(np.log(p[np.arange(m), yb])))
        g = p.copy()
        g[np.arange(m), yb] -= 1
        g /= m
        gz = (g @ W2) * (z > 0)
        W1, b1, W2, b2 = W1 - lr * gz.T @ xb, b1 - lr * gz.sum(0), W2 - lr * g.T @ a, b2 - lr * g.sum(0)
    return np.array(losses), first_logits, (W1, b1, W2, b2)


def no_sync_loop(ctx):
    steps = int(ctx.rng.integers(8, 13))
    W1, b1, W2, b2, x, y = _mlp_problem(ctx.rng, n=16 * steps)
    lr = float(np.round(ctx.rng.uniform(0.05, 0.3), 3))
    got = ctx.call("_clash_train", [W1, b1, W2, b2, x, y, steps, lr], "torch")
    items = got["items"]
    losses, weights, report, cuda_report, clean = items[0], items[1:5], *(i["value"] for i in items[5:8])
    ctx.details.update(syncs=report or "none", cuda_syncs=cuda_report or "none", clean_loop_cuda_syncs=clean)
    if report or cuda_report:
        seen = "; ".join(r for r in (report, cuda_report) if r)
        ctx.fail(f"train_steps made the host wait for the device inside the loop ({seen}) in {steps} steps: each "
                 f".item(), float(), print or .cpu() of a loss blocks until the GPU has finished everything queued. "
                 f"Keep each loss as a tensor (loss.detach()), and return torch.stack(losses)")
    t_losses, _, t_weights = _truth_sgd(W1, b1, W2, b2, x, y, steps, lr)
    if losses.get("type") == "torch.Tensor" and list(losses.get("shape", [])) != [steps]:
        ctx.fail(f"train_steps returned a tensor of shape {tuple(losses['shape'])}; expected ({steps},), one loss "
                 f"per batch")
    ctx.same(losses, ctx.truth(t_losses), "torch", ["losses"], "the losses from train_steps vs float64 NumPy",
             want_framework="any")
    ctx.same({"type": "tuple", "items": weights}, ctx.truth(*t_weights), "torch", ["W1", "b1", "W2", "b2"],
             "the weights after train_steps vs float64 NumPy", want_framework="any")
    where = "torch.cuda.set_sync_debug_mode and " if ctx.device == "cuda" else ""
    return (f"{steps} steps, losses and weights equal float64 NumPy, and no host sync in the loop "
            f"(checked with {where}counted Tensor.item/float/print/.cpu calls)")


# -- mixed precision ------------------------------------------------------------------------------------------------
def _judge_mixed(ctx, framework, fn, out, weights, truth, lr):
    logits, loss = leaves(out, 2, fn)
    t_losses, t_logits, t_weights = truth
    logits_arr = tensor(logits, framework, ctx.device, f"the logits from {fn}")
    dtype = logits.get("dtype")
    if dtype not in LOW:
        ctx.fail(f"the logits from {fn} are {dtype}: the forward pass ran in full precision. Run it under "
                 + ("torch.autocast(device_type, dtype=torch.bfloat16) (float16 on CUDA)" if framework == "torch" else
                    "the mixed_bfloat16 policy (mixed_float16 on a GPU), set before the model is built"))
    loss_arr = tensor(loss, framework, ctx.device, f"the loss from {fn}")
    if np.asarray(loss_arr).size != 1:
        ctx.fail(f"the loss from {fn} has shape {tuple(np.shape(loss_arr))}; return the mean loss, a 0-d tensor")
    checks = [("logits", logits_arr.astype(np.float64), t_logits),
              ("loss", np.asarray(loss_arr, np.float64).reshape(()), np.asarray(t_losses[0])),
              *(("weights", np.asarray(tensor(w, framework, ctx.device, f"{fn}'s {n}"), np.float64), t)
                for n, w, t in zip(("W1", "b1", "W2", "b2"), weights, t_weights))]
    names = ["logits", "loss", "W1", "b1", "W2", "b2"]
    for name, (kind, got, want) in zip(names, checks):
        rtol, atol = MIXED_TOL[kind]
        stats = compare(got, want, f"{fn}'s {name} vs a float64 step", rtol=rtol, atol=atol,
                        actual_dtype="float64", expected_dtype="float64")
        ctx.details[f"{name}_max_abs_err"] = stats["max_abs_err"]
    return dtype


def _unchanged(weights, start) -> bool:
    return all("array" in w and np.array_equal(np.asarray(w["array"]), s) for w, s in zip(weights, start))


def torch_mixed(ctx):
    W1, b1, W2, b2, x, y = _mlp_problem(ctx.rng)
    lr = float(np.round(ctx.rng.uniform(0.3, 0.6), 2))
    got = ctx.call("_clash_autocast", [W1, b1, W2, b2, x, y, lr], "torch")
    out, weights, produced = got["items"][0], got["items"][1:5], got["items"][5]["value"]
    if _unchanged(weights, (W1, b1, W2, b2)):
        ctx.fail("after autocast_step the weights are unchanged: call scaler.scale(loss).backward(), "
                 "scaler.step(optimizer) and scaler.update() (the scaler is disabled on CPU and passes through)")
    truth = _truth_sgd(W1, b1, W2, b2, x, y, 1, lr)
    dtype = _judge_mixed(ctx, "torch", "autocast_step", out, weights, truth, lr)
    layers = produced.split(",") if produced else []
    ctx.details["linear_outputs"] = produced
    if not layers or any(d not in LOW for d in layers):
        ctx.fail(f"the Linear layers produced {produced or 'nothing'} (read by the grader's forward hooks): run the "
                 f"model's forward pass itself inside torch.autocast, not only a cast of its output")
    return (f"the Linear layers computed in {layers[0]} (autocast), and the loss and updated weights are within the "
            f"bfloat16 tolerance of a float64 step")


def keras_mixed(ctx):
    W1, b1, W2, b2, x, y = _mlp_problem(ctx.rng)
    lr = float(np.round(ctx.rng.uniform(0.3, 0.6), 2))
    got = ctx.call("_clash_keras_mixed", [W1, b1, W2, b2, x, y, lr], "tensorflow")
    items = got["items"]
    out, weights, compute, policy_after = items[0], items[1:5], items[5]["value"], items[6]["value"]
    ctx.details.update(compute_dtypes=compute, policy_after=policy_after)
    if not compute:
        ctx.fail("keras_mixed_step never called make_model(): build the model with it, after setting the policy")
    if policy_after != "float32":
        ctx.fail(f"keras_mixed_step left the global policy at {policy_after!r}: every layer built afterwards would be "
                 f"mixed too. Call tf.keras.mixed_precision.set_global_policy('float32') when you are done (in a "
                 f"finally block)")
    layers = compute.split(",")
    if any(d not in LOW for d in layers):
        ctx.fail(f"the model's layers compute in {compute}: set the policy (mixed_bfloat16 on CPU, mixed_float16 on "
                 f"a GPU) before calling make_model(); a policy set afterwards changes nothing")
    if _unchanged(weights, (W1.T, b1, W2.T, b2)):
        ctx.fail("after keras_mixed_step the weights are unchanged: apply the gradients with the optimizer")
    truth = _truth_sgd(W1, b1, W2, b2, x, y, 1, lr)
    dtype = _judge_mixed(ctx, "tensorflow", "keras_mixed_step", out, weights, truth, lr)
    return (f"the layers computed in {layers[0]}, the policy was reset to float32, and the loss and updated weights "
            f"are within the bfloat16 tolerance of a float64 step (logits {dtype})")


# -- graph mode speed-up --------------------------------------------------------------------------------------------
# Thresholds (course.toml): threshold_cpu = 1.2, the floor: the solution (torch.compile, inductor) reached 1.6-4.8x
# (median 2.1x over 7 runs) on 2 shared cores under load average 5-9; half the median is ~1.05, so the floor rules.
# threshold_cuda = 1.5: eagerly the chain is 45 kernel launches on 1024 elements, launch-bound; inductor fuses them
# into one Triton kernel, so the compiled side pays one launch plus its guards. On an NVIDIA H200 (torch 2.11) the
# solution reached 2.99-4.49x over 10 runs (medians 3.06x and 3.74x in two sessions of 5; eager ~450 us, compiled
# 124-160 us per timed call); half the lower median is ~1.5.
CHAIN_N = 1024


def _truth_chain(x):
    x = x.astype(np.float64)
    for _ in range(5):
        x = x * 0.8 + 0.3
        x = np.clip(x, -2.0, 2.0)
        x = np.abs(x) * 0.9 - 0.5
        x = np.maximum(x, 0) + 0.1
        x = np.square(x)
    return x


def graph_speedup(ctx):
    def make_args():
        return [ctx.rng.normal(scale=2.0, size=CHAIN_N).astype(np.float32)]

    ctx.call("_clash_prepare_compile", [], "torch")
    for _ in range(2):  # the first call compiles; both must equal float64 NumPy
        args = make_args()
        got = ctx.call("_clash_fast_chain", args, "torch")
        ctx.same(got, ctx.truth(_truth_chain(args[0])), "torch", ["output"], "make_fast(chain) vs float64 NumPy",
                 want_framework="any")
    ratio = ctx.speedup("baseline_chain_sum", "_clash_fast_chain_sum", make_args, "torch", rounds=21, target_round_s=0.03)
    where = "CUDA" if ctx.device == "cuda" else "CPU, one thread"
    return ctx.speed_verdict(ratio, "make_fast(chain)", "eager chain") + f" ({where})"


PARTS = {f.__name__: f for f in (timer, no_sync_loop, torch_mixed, keras_mixed, graph_speedup)}
