"""Module 07's grader code in the workers: the timer's workload, the training loop captured as a graph and replayed,
the mixed-precision steps on the grader's model, and the eager chain for the timed part.

Nothing here reports a verdict: the timer's workload costs what the parent makes it wait (over two FIFOs in the
scratch folder) and the parent counts its calls; the training loop goes to a fresh verifier as a graph written as
data, which it reads for syncing ops and replays on batches the student's process never saw; the mixed-precision
steps return their outputs, whose rounding the parent compares with low-precision arithmetic it does itself.
"""
from __future__ import annotations

import json
import operator
import os

import numpy as np

from autograder.worker import device

# The eager chain, the grader's own copy (the notebook's could be edited): the timed part's baseline, and what
# make_fast compiles.
CHAIN_ROUNDS = 5


def _chain(x):
    import torch
    for _ in range(CHAIN_ROUNDS):
        x = x * 0.8 + 0.3
        x = torch.clamp(x, -2.0, 2.0)
        x = torch.abs(x) * 0.9 - 0.5
        x = torch.relu(x) + 0.1
        x = torch.square(x)
    return x


def baseline_chain_sum(student, tile, x):
    """What is timed: the eager chain on x tiled `tile` times, summed. The parent sends only x and the reply is one
    number, so the pipe carries kilobytes while the chain works on up to a megabyte."""
    return _chain(x.repeat(tile)).sum()


# -- the timer's workload -------------------------------------------------------------------------------------------
class _Workload:
    """The grader's workload for the timer. Each call asks the parent for a go (a byte on `calls`) and waits for it
    (a byte on `go`): the parent decides what the call costs (warm-up, outliers) and counts the calls, so nothing in
    this process says what a call costs or how many were made. On CUDA each call then queues `gpu_reps` large
    matmuls that run asynchronously: a timer that does not synchronise sees only their launch."""

    def __init__(self, calls: str, go: str, gpu_reps: int):
        import torch
        self._calls, self._go = os.open(calls, os.O_WRONLY), os.open(go, os.O_RDONLY)
        self._gpu_reps = gpu_reps
        self._a = torch.randn(4096, 4096, device="cuda") / 128 if (device() == "cuda" and gpu_reps) else None

    def __call__(self, x):
        os.write(self._calls, b"c")
        if os.read(self._go, 1) != b"g":
            raise RuntimeError("the grader stopped answering the workload")
        y = x * 2
        if self._a is not None:
            b = self._a
            for _ in range(self._gpu_reps):
                b = self._a @ b
            y = y + b[0, 0]
        return y

    def close(self):
        os.close(self._calls)
        os.close(self._go)


def time_it(student, calls, go, warmup, repeats, gpu_reps):
    """The student's time_call on the grader's workload, whose calls the parent paces through the FIFOs `calls`
    and `go` (in the scratch folder); returns what time_call reported."""
    import torch
    work = _Workload(str(calls), str(go), int(gpu_reps))
    try:
        reported = student.time_call(work, (torch.ones(8, device=device()),), int(warmup), int(repeats))
        if device() == "cuda":
            torch.cuda.synchronize()
    finally:
        work.close()
    return reported


def steady(student, calls, go, count):
    """`count` calls of the workload, paced by the parent (which times this request), in a clean worker."""
    import torch
    work = _Workload(str(calls), str(go), 0)
    x = torch.ones(8, device=device())
    try:
        for _ in range(int(count)):
            work(x)
    finally:
        work.close()


def gpu_reps(student, target_s):
    """How many 4096x4096 matmuls take about target_s on this GPU (CUDA events), and how long they take."""
    import torch
    a = torch.randn(4096, 4096, device="cuda") / 128
    a @ a
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        a @ a
    end.record()
    end.synchronize()
    one = start.elapsed_time(end) / 1000 / 5
    reps = int(min(200, max(1, round(float(target_s) / max(one, 1e-6)))))
    return reps, reps * one


# -- the grader's model ---------------------------------------------------------------------------------------------
def _mlp(W1, b1, W2, b2):
    """The grader's model, Linear-ReLU-Linear, with the grader's float32 weights, on the worker's device."""
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]), torch.nn.ReLU(),
                                torch.nn.Linear(W2.shape[1], W2.shape[0])).to(W1.device)
    with torch.no_grad():
        for p, v in zip(model.parameters(), (W1, b1, W2, b2)):
            p.copy_(v)
    return model


def _weights(model):
    return tuple(p.detach().clone() for p in model.parameters())


# -- the training loop without syncs --------------------------------------------------------------------------------
def _meta_mlp(W1, b1, W2, b2):
    """The grader's model with the given tensors as its parameters (for recording: no weights of its own)."""
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0], device="meta"), torch.nn.ReLU(),
                                torch.nn.Linear(W2.shape[1], W2.shape[0], device="meta"))
    for layer, (weight, bias) in ((model[0], (W1, b1)), (model[2], (W2, b2))):
        layer.weight, layer.bias = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())
    return model


def capture_loop(student, W1, b1, W2, b2, x, y, steps, lr):
    """The student's train_steps on the grader's model and batches, recorded op by op (make_fx) on fake tensors,
    which have shapes but no values, with the weights and batches as the graph's inputs; returned as the bytes of
    the graph written as data (JSON, see _encode). A value read on the host inside the loop has nothing to come
    from while recording: using it fails here, and reading it is recorded (aten._local_scalar_dense), even where the
    recording on real tensors, which stops at the first read, was switched off around it."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx
    steps = int(steps)

    def loop(W1, b1, W2, b2, x, y):
        model = _meta_mlp(W1, b1, W2, b2)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(lr))
        losses = student.train_steps(model, optimizer, list(zip(x.chunk(steps), y.chunk(steps))))
        return (losses, *(p.detach() for p in model.parameters()))

    # First on real tensors: a read on the host (print(loss) included) raises there, at the student's line.
    make_fx(loop)(W1, b1, W2, b2, x, y)
    graph = make_fx(loop, tracing_mode="fake")(W1, b1, W2, b2, x, y)
    nodes = []
    for node in graph.graph.nodes:
        entry = {"name": node.name, "op": node.op, "args": _encode(node.args), "kwargs": _encode(node.kwargs)}
        if node.op == "call_function":
            entry["target"] = "getitem" if node.target is operator.getitem else str(node.target)
        elif node.op == "get_attr":  # a constant the loop made from Python values
            entry["op"], entry["args"] = "constant", _encode(getattr(graph, node.target))
        nodes.append(entry)
    return np.frombuffer(json.dumps(nodes).encode(), dtype=np.uint8).copy()


def _encode(value):
    """An argument of a recorded op as JSON: other nodes by name; dtypes, devices, layouts by name; tensors (the
    loop's constants) by their values."""
    import torch
    import torch.fx
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_encode(v) for v in value]}
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    for kind in (torch.dtype, torch.layout, torch.memory_format):
        if isinstance(value, kind):
            return {kind.__name__: str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"train_steps's recorded loop holds a {type(value).__name__} the grader cannot replay")


# Operations that make the host wait for the device: reading a value, or an output whose size depends on values.
SYNCING = ("aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.masked_select", "aten._unique2",
           "aten.unique_consecutive", "aten.unique_dim")
_LOADED: dict = {}


def _decode(value, env: dict):
    """The inverse of _encode, in the verifier: only names of torch's own dtypes, layouts and formats."""
    import torch
    if not isinstance(value, dict):
        return value
    if "node" in value:
        return env[value["node"]]
    if "list" in value:
        return [_decode(v, env) for v in value["list"]]
    if "dict" in value:
        return {k: _decode(v, env) for k, v in value["dict"].items()}
    if "device" in value:
        return torch.device(value["device"])
    if "tensor" in value:
        return torch.tensor(value["tensor"], dtype=_decode({"dtype": value["dtype"]}, env))
    for kind in (torch.dtype, torch.layout, torch.memory_format):
        if kind.__name__ in value:
            found = getattr(torch, str(value[kind.__name__]), None)
            if not isinstance(found, kind):
                raise ValueError(f"the recorded loop names an unknown {kind.__name__} {value[kind.__name__]!r}")
            return found
    raise ValueError(f"the recorded loop holds an argument the grader cannot read: {str(value)[:80]}")


def _operation(target: str):
    """A recorded op's function: an ATen operator (or getitem); profiler marks are skipped (None)."""
    import torch
    if target == "getitem":
        return operator.getitem
    namespace, _, rest = target.partition(".")
    if namespace == "profiler":
        return None
    name, _, overload = rest.partition(".")
    if namespace != "aten" or not name or not overload:
        raise ValueError(f"the recorded loop calls {target!r}, which is not an ATen operation")
    return getattr(getattr(torch.ops.aten, name), overload)


def load_loop(student, data):
    """In a fresh verifier (no notebook code): read the recorded loop; return the syncing operations it calls, one
    name per call."""
    nodes = json.loads(np.asarray(data, dtype=np.uint8).tobytes())
    for node in nodes:
        if node["op"] == "call_function":
            node["fn"] = _operation(node["target"])
    _LOADED["loop"] = nodes
    return ",".join(node["target"].rsplit(".", 1)[0] for node in nodes
                    if node["op"] == "call_function" and node["target"].rsplit(".", 1)[0] in SYNCING)


def replay_loop(student, W1, b1, W2, b2, x, y):
    """The recorded loop, op by op, on new weights and batches: (losses, W1, b1, W2, b2). On CUDA any synchronising
    operation raises (torch.cuda.set_sync_debug_mode("error"))."""
    import torch
    inputs = iter([t.detach().clone() for t in (W1, b1, W2, b2, x, y)])
    env: dict = {}
    cuda = device() == "cuda"
    if cuda:
        torch.cuda.set_sync_debug_mode("error")
    try:
        for node in _LOADED["loop"]:
            if node["op"] == "placeholder":
                env[node["name"]] = next(inputs)
            elif node["op"] == "constant":
                env[node["name"]] = _decode(node["args"], env).to(device())
            elif node["op"] == "call_function":
                fn = node["fn"]
                args, kwargs = _decode(node["args"], env), _decode(node["kwargs"], env)
                env[node["name"]] = None if fn is None else fn(*args, **kwargs)
            elif node["op"] == "output":
                out = _decode(node["args"], env)[0]
            else:
                raise ValueError(f"the recorded loop holds a node of kind {node['op']!r}")
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
    if cuda:
        torch.cuda.synchronize()
    return tuple(out)


# -- mixed precision ------------------------------------------------------------------------------------------------
def autocast_step(student, W1, b1, W2, b2, x, y, lr):
    """The student's autocast_step on the grader's model: what it returned and the weights after the step."""
    import torch
    model = _mlp(W1, b1, W2, b2)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(lr))
    scaler = torch.amp.GradScaler(device(), init_scale=1024.0, enabled=device() == "cuda")
    out = student.autocast_step(model, optimizer, scaler, x, y)
    return (out, *_weights(model))


def keras_mixed_step(student, policy, W1, b1, W2, b2, x, y, lr):
    """The student's keras_mixed_step with the grader's model factory: what it returned, the weights after the step,
    and the global policy it left behind (then float32 again for whatever runs next). None for the weights if it
    never built a model."""
    import tensorflow as tf
    made = []

    def make_model():
        model = tf.keras.Sequential([tf.keras.Input((W1.shape[1],)),
                                     tf.keras.layers.Dense(W1.shape[0], activation="relu"),
                                     tf.keras.layers.Dense(W2.shape[0])])
        model.set_weights([tf.transpose(W1).numpy(), b1.numpy(), tf.transpose(W2).numpy(), b2.numpy()])
        made.append(model)
        return model

    try:
        out = student.keras_mixed_step(make_model, x, y, float(lr), policy)
        policy_after = tf.keras.mixed_precision.global_policy().name
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    if not made:
        return (out, None, None, None, None, policy_after)
    k1, c1, k2, c2 = made[-1].get_weights()
    return (out, tf.transpose(k1), tf.constant(c1), tf.transpose(k2), tf.constant(c2), policy_after)


# -- graph mode speed-up --------------------------------------------------------------------------------------------
_FAST: dict = {}


def prepare_compile(student):
    """Import inductor before the timed part's first call (each call has its own time limit), and suit it to the
    grader's sandbox: a fresh, empty cache every run, so precompiled headers (which pay off across runs), test
    builds of each vector ISA (trust the CPU's flags instead) and a pool of compile processes would only cost time."""
    from torch._inductor import config
    config.cpp_cache_precompile_headers = False
    config.cpp.vec_isa_ok = True
    config.compile_threads = 1
    import torch._inductor.compile_fx  # noqa: F401


def fast_chain(student, tile, x):
    """make_fast(chain) on x tiled `tile` times, made once per worker from the grader's own chain."""
    if "chain" not in _FAST:
        _FAST["chain"] = student.make_fast(_chain)
    return _FAST["chain"](x.repeat(tile))


def fast_chain_sum(student, tile, x):
    return fast_chain(student, tile, x).sum()
