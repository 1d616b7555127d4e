"""Introspection requests read real framework state in a worker: tracing counts, graph op types,
TorchScript nodes and torch.compile graph breaks (the behaviours of shared/notes/pitfalls.md 1, 6, 9)."""
import numpy as np
import pytest

from autograder._registry import Limits
from autograder._sandbox import Worker

pytestmark = pytest.mark.slow
LIMITS = Limits(startup_timeout_s=120, call_timeout_s=120)

TF_CODE = '''
import tensorflow as tf

@tf.function
def scaled(x, k):
    return x * k

@tf.function
def unrolled(x):
    for _ in range(10):
        x = x + 1.0
    return x

@tf.function
def looped(x):
    for _ in tf.range(10):
        x = x + 1.0
    return x

def plain(x):
    return x
plain.experimental_get_tracing_count = lambda: 0   # a fake count must not be believed
'''

TORCH_CODE = '''
import torch

def _loop(x):
    for _ in range(3):
        x = x + 1
    return x

scripted_loop = torch.jit.script(_loop)
traced_loop = torch.jit.trace(_loop, torch.zeros(2))

def breaks_once(x):
    y = x * 2
    if y.sum().item() > 0:   # .item() leaves the graph
        return y + 1
    return y - 1

def no_breaks(x):
    return torch.where(x.sum() > 0, x * 2 + 1, x * 2 - 1)
'''


def ask(worker, op, fn, args=()):
    reply = worker.request({"op": op, "fn": fn, "args": list(args)}, f"inspecting {fn}")
    assert reply["ok"], reply
    return reply["value"]


def test_tensorflow_tracing_counts_and_graph_ops():
    w = Worker("student", [{"label": "cell 1", "source": TF_CODE}], ["tensorflow"], "cpu", LIMITS)
    try:
        x = np.zeros(3, dtype=np.float32)
        for k in range(5):  # Python scalars: one trace each
            w.request({"op": "call", "fn": "scaled", "args": [x, k], "framework": "tensorflow"}, "calling")
        assert ask(w, "tracing_count", "scaled") == 5
        unrolled = ask(w, "graph_ops", "unrolled", [x])
        looped = ask(w, "graph_ops", "looped", [x])
        assert unrolled["ops"].count("AddV2") == 10 and not {"While", "StatelessWhile"} & set(unrolled["ops"])
        assert {"While", "StatelessWhile"} & set(looped["ops"])
        reply = w.request({"op": "tracing_count", "fn": "plain"}, "inspecting plain")
        assert not reply["ok"] and "plain Python function, not a tf.function" in reply["error"]
    finally:
        w.close()


def test_torchscript_nodes_and_compile_graph_breaks():
    w = Worker("student", [{"label": "cell 1", "source": TORCH_CODE}], ["torch"], "cpu", LIMITS)
    try:
        scripted, traced = ask(w, "script_nodes", "scripted_loop"), ask(w, "script_nodes", "traced_loop")
        assert "prim::Loop" in scripted and "prim::Loop" not in traced
        assert traced.count("aten::add") == 3
        x = np.ones(4, dtype=np.float32)
        assert ask(w, "graph_breaks", "breaks_once", [x])["graph_break_count"] >= 1
        assert ask(w, "graph_breaks", "no_breaks", [x])["graph_break_count"] == 0
    finally:
        w.close()
