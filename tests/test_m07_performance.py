"""Module 07 (performance): plausible wrong answers fail with messages that teach, and other correct answers (another
timer API, another way to collect losses, another Keras policy API, another torch.compile setting) pass."""

import pytest

from autograder import run_check

from conftest import notebook_with

pytestmark = pytest.mark.slow

M = "07_performance"

WRONG = {
    # the mean of the timed calls: outliers pull it up
    "time_call": '''
def time_call(fn, args, warmup, repeats):
    for _ in range(warmup):
        fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats
''',
    # .item() on every step, and a progress print
    "train_steps": '''
def train_steps(model, optimizer, batches):
    losses = []
    for i, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {i}: {loss:.4f}")
    return torch.tensor(losses)
''',
    # float32 all the way: no autocast
    "autocast_step": '''
def autocast_step(model, optimizer, scaler, x, y):
    optimizer.zero_grad()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return logits.detach(), loss.detach()
''',
    # the mixed policy, never reset
    "keras_mixed_step": '''
def keras_mixed_step(make_model, x, y, lr, policy):
    tf.keras.mixed_precision.set_global_policy(policy)
    model = make_model()
    optimizer = tf.keras.optimizers.SGD(lr)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, tf.cast(logits, tf.float32))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return logits, loss
''',
    # plain eager, wrapped: no graph at all
    "make_fast": '''
def make_fast(fn):
    def fast(x):
        return fn(x)
    return fast
''',
}

# The course's own bug, found in review (issue 14): a LossScaleOptimizer whose loss is never scaled. Keras 3 divides
# the gradients by the scale when it applies them, so under mixed_float16 the step barely moves the weights.
UNSCALED = '''
def keras_mixed_step(make_model, x, y, lr, policy):
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        model = make_model()
        optimizer = tf.keras.optimizers.SGD(lr)
        if policy == "mixed_float16":
            optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, tf.cast(logits, tf.float32))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return logits, loss
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
'''


def test_a_float16_step_that_never_scales_its_loss_fails_on_cpu(course, tmp_path, zygote):
    """It passed before (the CPU path used bfloat16 and nothing ran float16): the update is now held to plain SGD's
    under mixed_float16 on every device, and the message and hint name optimizer.scale_loss."""
    nb = notebook_with(course.module(M).solution, {"keras_mixed_step": UNSCALED}, tmp_path / "unscaled.ipynb")
    (p,) = run_check(f"{M}.keras_mixed", notebook=nb, course=course, zygote=zygote).parts
    assert p.status == "failed" and p.message.startswith("under mixed_float16 the weights moved "), p.message
    assert "optimizer.scale_loss(loss)" in p.message and "scale_loss" in p.hint, (p.message, p.hint)
    assert p.details["mixed_float16_update_vs_sgd"] < 1e-3 < p.details["mixed_bfloat16_update_vs_sgd"], p.details


# A second wrong timer: the median, but with no warm-up (the first calls are the slow ones). Swapped in by a
# second notebook only for the timer part, to stay within one run_check per notebook.
NO_WARMUP = '''
def time_call(fn, args, warmup, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
'''


def test_wrong_answers_fail_with_messages_that_teach(course, tmp_path, zygote):
    module = course.module(M)
    result = run_check(M, notebook=notebook_with(module.solution, WRONG, tmp_path / "wrong.ipynb"), course=course,
                       zygote=zygote)
    msg = {p.id: p.message for p in result.parts}
    assert all(p.status == "failed" for p in result.parts), result.summary()
    assert "that is the MEAN of the timed calls" in msg["timer"] and "Report the median" in msg["timer"], msg["timer"]
    assert "train_steps made the host wait for the device inside the loop" in msg["no_sync_loop"]
    assert "read a tensor's value on the host at cell" in msg["no_sync_loop"], msg["no_sync_loop"]
    assert "return torch.stack(losses)" in msg["no_sync_loop"]
    assert "the logits from autocast_step are float32: the forward pass ran in full precision" in msg["torch_mixed"]
    assert "left the global policy at 'mixed_bfloat16'" in msg["keras_mixed"] and "finally" in msg["keras_mixed"]
    assert "make_fast(chain) is" in msg["graph_speedup"] and "as fast as eager chain" in msg["graph_speedup"]
    assert result.score == 0

    nb = notebook_with(module.solution, {"time_call": NO_WARMUP}, tmp_path / "cold.ipynb")
    result = run_check(f"{M}.timer", notebook=nb, framework="torch", course=course, zygote=zygote)
    message = result.parts[0].message
    assert result.parts[0].status == "failed"
    assert "what the first calls cost" in message and "warm-up cost" in message, message


ALTERNATIVES = {
    # torch.utils.benchmark.Timer, one call per measurement (it synchronises CUDA itself)
    "time_call": '''
import torch.utils.benchmark as benchmark

def time_call(fn, args, warmup, repeats):
    for _ in range(warmup):
        fn(*args)
    timer = benchmark.Timer(stmt="fn(*args)", globals={"fn": fn, "args": args})
    return float(np.median([timer.timeit(number=1).mean for _ in range(repeats)]))
''',
    # a preallocated loss tensor filled in place, optimizer.zero_grad() without set_to_none
    "train_steps": '''
def train_steps(model, optimizer, batches):
    device = next(model.parameters()).device
    losses = torch.empty(len(batches), device=device)
    for i, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        losses[i] = loss.detach()
    return losses
''',
    # autocast's own default dtype for the device (bfloat16 on CPU, float16 on CUDA)
    "autocast_step": '''
def autocast_step(model, optimizer, scaler, x, y):
    optimizer.zero_grad()
    with torch.autocast(x.device.type):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss.detach()
''',
    # Keras 3's own name for the global policy, and a policy object
    "keras_mixed_step": '''
def keras_mixed_step(make_model, x, y, lr, name):
    tf.keras.config.set_dtype_policy(tf.keras.DTypePolicy(name))
    try:
        model = make_model()
    finally:
        tf.keras.config.set_dtype_policy("float32")
    optimizer = tf.keras.optimizers.SGD(learning_rate=lr)
    if name == "mixed_float16":
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32)))
        scaled = optimizer.scale_loss(loss)   # the plain SGD's scale_loss returns the loss itself
    optimizer.apply_gradients(zip(tape.gradient(scaled, model.trainable_variables), model.trainable_variables))
    return logits, loss
''',
    # a whole-graph compile with fullgraph=True (no graph breaks allowed)
    "make_fast": '''
def make_fast(fn):
    return torch.compile(fn, fullgraph=True)
''',
}


ALTERNATIVES_STRUCTURE = {
    # a Stopwatch context manager (CUDA events on a GPU, perf_counter on CPU) that each timed call runs inside
    "time_call": '''
class Stopwatch:
    """Times the block it wraps, in seconds, after the device has finished the block's work."""

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.t0
        return False


def time_call(fn, args, warmup, repeats):
    for _ in range(warmup):
        fn(*args)
    samples = []
    for _ in range(repeats):
        with Stopwatch() as watch:
            fn(*args)
        samples.append(watch.seconds)
    return float(statistics.median(samples))
''',
    # one step as a helper, the losses gathered by a list comprehension, model.zero_grad() instead of the optimizer's
    "train_steps": '''
def _one_step(model, optimizer, x, y):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_steps(model, optimizer, batches):
    return torch.stack([_one_step(model, optimizer, x, y) for x, y in batches])
''',
    # the dtype choice and the autocast forward pass in helpers, the loss as an nn.CrossEntropyLoss module
    "autocast_step": '''
def _low_precision(device_type):
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def _forward_and_loss(model, x, y):
    with torch.autocast(device_type=x.device.type, dtype=_low_precision(x.device.type)):
        logits = model(x)
        loss = torch.nn.CrossEntropyLoss()(logits, y)
    return logits, loss


def autocast_step(model, optimizer, scaler, x, y):
    optimizer.zero_grad()
    logits, loss = _forward_and_loss(model, x, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss
''',
    # a context manager owns the policy (its finally resets it); the SGD step is a helper; Keras 3 scales the loss
    "keras_mixed_step": '''
import contextlib


@contextlib.contextmanager
def global_policy(name):
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def _sgd_step(model, optimizer, x, y, scaled):
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, tf.cast(logits, tf.float32))
        target = optimizer.scale_loss(loss) if scaled else loss  # LossScaleOptimizer unscales what it applies
    optimizer.apply_gradients(zip(tape.gradient(target, model.trainable_variables), model.trainable_variables))
    return logits, loss


def keras_mixed_step(make_model, x, y, lr, policy):
    half = policy == "mixed_float16"
    with global_policy(policy):
        model = make_model()
        optimizer = tf.keras.optimizers.SGD(lr)
        if half:
            optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
        return _sgd_step(model, optimizer, x, y, scaled=half)
''',
    # fn wrapped in an nn.Module that compiles itself (nn.Module.compile)
    "make_fast": '''
class CompiledFn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def make_fast(fn):
    module = CompiledFn(fn)
    module.compile()
    return module
''',
}

ALTERNATIVES_STYLE = {
    # type hints, integer nanoseconds, synchronize() around each call, and the median taken by hand from a sorted list
    "time_call": '''
from typing import Callable, Sequence


def time_call(fn: Callable, args: Sequence, warmup: int, repeats: int) -> float:
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn(*args)
    elapsed_ns: list[int] = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()  # nothing queued earlier may land in this call's time
        start = time.perf_counter_ns()
        fn(*args)
        if cuda:
            torch.cuda.synchronize()  # fn may only have queued its kernels
        elapsed_ns.append(time.perf_counter_ns() - start)
    elapsed_ns.sort()
    middle = len(elapsed_ns) // 2
    median_ns = elapsed_ns[middle] if len(elapsed_ns) % 2 else (elapsed_ns[middle - 1] + elapsed_ns[middle]) / 2
    return median_ns / 1e9
''',
    # F imported under its usual alias, gradients zeroed in place (set_to_none=False), the losses joined by torch.cat
    "train_steps": '''
import torch.nn.functional as F


def train_steps(model, optimizer, batches):
    per_step = []
    for inputs, labels in batches:
        optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(inputs), labels, reduction="mean")
        loss.backward()
        optimizer.step()
        per_step.append(loss.detach().reshape(1))  # a 1-element tensor, still on the device
    return torch.cat(per_step)
''',
    # torch.amp.autocast spelled out, the dtype looked up in a dict, the loss from log_softmax + nll_loss in float32
    "autocast_step": '''
LOW_PRECISION = {"cuda": torch.float16, "cpu": torch.bfloat16}


def autocast_step(model, optimizer, scaler, x, y):
    optimizer.zero_grad(set_to_none=True)
    with torch.amp.autocast(device_type=x.device.type, dtype=LOW_PRECISION.get(x.device.type, torch.bfloat16)):
        logits = model(x)
        # the loss in float32: autocast would do the same for cross_entropy
        loss = torch.nn.functional.nll_loss(torch.log_softmax(logits.float(), dim=-1), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits.detach(), loss.detach()
''',
    # a Policy object, the functional Keras loss, Keras 3's optimizer.apply, and try/finally around the whole step
    "keras_mixed_step": '''
def keras_mixed_step(make_model, x, y, lr, policy_name):
    on_half = policy_name == "mixed_float16"
    policy = tf.keras.mixed_precision.Policy(policy_name)
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        model = make_model()
        sgd = tf.keras.optimizers.SGD(learning_rate=lr)
        opt = tf.keras.mixed_precision.LossScaleOptimizer(sgd) if on_half else sgd
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = tf.keras.losses.sparse_categorical_crossentropy(y, tf.cast(logits, "float32"),
                                                                          from_logits=True)
            loss = tf.reduce_mean(per_example)
            scaled_loss = opt.scale_loss(loss) if on_half else loss
        opt.apply(tape.gradient(scaled_loss, model.trainable_variables), model.trainable_variables)
        return logits, loss
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
''',
    # torch.compile used as a decorator factory, the backend and the static shapes named
    "make_fast": '''
def make_fast(fn):
    compile_static = torch.compile(backend="inductor", dynamic=False)
    return compile_static(fn)
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_correct_alternative_answers_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(course.module(M).solution, answers, tmp_path / "alt.ipynb")
    result = run_check(M, notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()


# A notebook importing PyTorch as `th` (it scored 1/10 while the grader's code ran in the notebook's namespace) is
# tests/test_name_clash.py's case for every module.


def test_the_speedup_text_states_the_graders_workload_and_thresholds(course):
    """Part 5's text quotes the tile and both thresholds the grader uses (issue 13: the CPU workload was changed so
    that only fusing gains; a TorchScript trace flaked at the old one)."""
    import json

    from autograder.exercises import m07_performance as spec
    part = next(p for p in course.module(M).exercise.parts if p.id == "graph_speedup")
    nb = json.loads(course.module(M).solution.read_text())
    text = next("".join(c["source"]) for c in nb["cells"] if part.title in "".join(c["source"]))
    assert f"{spec.CHAIN_N}-element" in text and f"tiles {spec.CHAIN_TILE['cpu']} times on CPU" in text, text
    assert spec.CHAIN_TILE["cuda"] == 1 and "untiled on CUDA" in text, text
    assert f"**{part.threshold_cpu:g}×** as fast on CPU and **{part.threshold_cuda:g}×** on CUDA" in text, text


# A student's TorchScript answer: trace on the first call, when an example input exists.
TRACE = '''
def make_fast(fn):
    traced = {}

    def run(x):
        if "graph" not in traced:
            traced["graph"] = torch.jit.trace(fn, (x,))
        return traced["graph"](x)
    return run
'''


def test_a_torchscript_trace_does_not_fuse_and_stays_under_the_cpu_threshold(course, tmp_path, zygote):
    """torch.jit.trace removes Python's dispatch but not the 45 passes over memory: on the tiled CPU workload it
    measured 0.80-0.87x against 1.15x (torch.compile 1.31-1.87x beside busy cores; benchmarks/load_test.py), where
    it flaked around the threshold at 1.14-1.21x on the untiled one. Once, inside the whole suite on two cores, it
    reached 1.12x: still a fail, so the test asks only that (an earlier `ratio < 1.1` failed there)."""
    nb = notebook_with(course.module(M).solution, {"make_fast": TRACE}, tmp_path / "trace.ipynb")
    (p,) = run_check(f"{M}.graph_speedup", notebook=nb, course=course, zygote=zygote).parts
    assert p.status == "failed" and "as fast as eager chain; at least 1.15x expected" in p.message, p.message


def test_the_timer_text_states_the_graders_band_and_attempts(course):
    import json

    from autograder.exercises import m07_performance as spec
    cells = json.loads(course.module(M).solution.read_text())["cells"]
    text = next("".join(c["source"]) for c in cells if "## Part 1" in "".join(c["source"]))
    low, high = spec.BAND
    assert f"within {low:g}–{high:g}×" in text and f"({spec.TIMER_ATTEMPTS} attempts in all)" in text, text


def test_tensorflows_truncating_bfloat16_matmul_counts_as_bfloat16_arithmetic():
    """TensorFlow's bfloat16 MatMul on this CPU rounds its result toward zero; the probe once knew only
    round-to-nearest, and the reference solution's keras_mixed failed the integrity check (fit 1.7 > LOW_MATCH).
    Keras mixed_bfloat16 logits now fit an emulation; float32 logits rounded to bfloat16 afterwards still do not."""
    import keras
    import numpy as np
    import tensorflow as tf

    from autograder.exercises.m07_performance import LOW_MATCH, _logits, _probe_problem, _rounded, probe_fit
    for seed in range(5):
        problem = _probe_problem(np.random.default_rng(seed))
        W1, b1, W2, b2, x, _ = problem
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(W1.shape[0], activation="relu"),
                                      keras.layers.Dense(W2.shape[0])])
        finally:
            keras.mixed_precision.set_global_policy("float32")
        model.set_weights([W1.T, b1, W2.T, b2])
        got = np.asarray(tf.cast(model(x), tf.float32), np.float64)
        fmt, fit = probe_fit(got, problem)
        assert fmt == "bfloat16" and fit <= LOW_MATCH, (seed, fit)
        cast_afterwards = _rounded(_logits(W1, b1, W2, b2, x).astype(np.float32), "bfloat16")
        assert probe_fit(cast_afterwards, problem)[1] > LOW_MATCH, seed
