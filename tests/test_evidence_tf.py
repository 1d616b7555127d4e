"""Issue 12: no tf.function part rests on what the student's process says about its graphs.

Module 01 `tf_graph` and module 04 `tf_step`, `tf_while` and `tf_clip` once read a tracing count and a graph's op
types from the student's worker, which a notebook can patch. Now the student's worker saves the graphs its calls
ran (a SavedModel), and a fresh verifier that runs no notebook code counts them, reads their ops and runs them on
inputs the student's process never saw. Each attack below patches what the student's process can reach (the
harness's answers, the grader's own functions in that process) around wrong code, and scores 0; the same patches
around the honest solution (the control) still pass.
"""
import pytest
from test_m04_tf_function import WRONG

from autograder import run_check

from conftest import notebook_with, parts

pytestmark = pytest.mark.slow

# The attack of the issue: the running harness (found through its globals, whichever way the worker started)
# answers the old introspection requests with a single trace and a While op.
PATCH_HARNESS = '''
import gc as _gc
for _globals in [o for o in _gc.get_objects() if isinstance(o, dict) and "_TF_FUNCTION" in o and "_answer" in o]:
    def _forged(req, _real=_globals["_answer"]):
        if req.get("op") == "tracing_count":
            return {"ok": True, "value": 1}
        if req.get("op") == "graph_ops":
            return {"ok": True, "value": {"ops": ["Placeholder", "Placeholder", "StatelessWhile"], "inner_ops": []}}
        return _real(req)
    _globals["_answer"] = _forged
'''

# The grader's functions in the student's process are patched too: they claim a tf.function and report only the
# last graph the calls ran.
PATCH_GRADER = '''
import autograder.worker.m01_tensors as _g1
import autograder.worker.m04_tf_function as _g4
_real_graphs_used = _g1.graphs_used
_g1.is_tf_function = _g4.is_tf_function = lambda fn: True
_g1.graphs_used = _g4.graphs_used = lambda fn, calls: _real_graphs_used(fn, calls)[-1:]
'''

WRONG_04 = {
    # one trace per batch size, and a Python loop unrolled for a Python int n: module 04's own wrong answers
    **{k: WRONG[k] for k in ("make_tf_train_step", "tf_power_iteration")},
    # eager, not a graph: right values, no graph at all
    "tf_clip_by_norm": '''
def tf_clip_by_norm(g, c):
    norm = tf.norm(g)
    return g * (c / norm) if norm > c else g
''',
}

M04 = "04_tf_function"
M01 = "01_tensors"


def _patched(cells: dict, first: str) -> dict:
    return {**cells, first: PATCH_HARNESS + PATCH_GRADER + cells[first]}


def test_m04_forged_traces_and_ops_score_zero(course, tmp_path, zygote):
    nb = notebook_with(course.module(M04).solution, _patched(WRONG_04, "make_tf_train_step"), tmp_path / "f.ipynb")
    result = run_check(M04, notebook=nb, course=course, zygote=zygote)
    by_id = parts(result)
    for pid in ("tf_step", "tf_while", "tf_clip"):
        assert by_id[pid].status == "failed" and by_id[pid].points == 0, (pid, by_id[pid].message)
    # Only the last of the step's six fixed-shape graphs was exported: it cannot take a new stream's sizes.
    assert "no graph your step traced accepts every batch size" in by_id["tf_step"].message
    assert "no While op: the Python loop was unrolled" in by_id["tf_while"].message
    assert "no attribute 'get_concrete_function'" in by_id["tf_clip"].message  # a plain function has no graph


# The grader's export replaced: the graph for a tensor n (a while loop even over range(n)) in the place of the graph
# for the Python int n (unrolled).
PATCH_EXPORT_POWER = '''
import autograder.worker.m04_tf_function as _g4
def _export_power(student, a, v, n_graph):
    looped = student.tf_power_iteration.get_concrete_function(a, v, tf.TensorSpec([], tf.int32))
    return _g4.saved_bytes("swapped", [looped, looped])
_g4.export_power = _export_power
'''


def test_m04_a_graph_for_another_n_swapped_in_scores_zero(course, tmp_path, zygote):
    cells = {"tf_power_iteration": PATCH_HARNESS + PATCH_EXPORT_POWER + WRONG_04["tf_power_iteration"]}
    nb = notebook_with(course.module(M04).solution, cells, tmp_path / "swapped.ipynb")
    result = run_check(f"{M04}.tf_while", notebook=nb, course=course, zygote=zygote)
    part = result.parts[0]
    assert part.status == "failed" and part.points == 0, part.message
    assert "the saved graph of tf_power_iteration for A, v and n=" in part.message and "was traced for" in part.message


def test_m04_the_same_patches_around_the_solution_pass(course, tmp_path, zygote):
    solution = course.module(M04).solution
    honest = {"make_tf_train_step": _source(solution, "make_tf_train_step")}
    nb = notebook_with(solution, _patched(honest, "make_tf_train_step"), tmp_path / "control.ipynb")
    result = run_check(f"{M04}.tf_step", notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()
    result = run_check(f"{M04}.tf_while", notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()
    result = run_check(f"{M04}.tf_clip", notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()


def test_m01_an_eager_function_reported_as_a_graph_scores_zero(course, tmp_path, zygote):
    eager = {"tf_loss_and_grad_graph": "tf_loss_and_grad_graph = tf_loss_and_grad\n"}
    nb = notebook_with(course.module(M01).solution, _patched(eager, "tf_loss_and_grad_graph"), tmp_path / "f.ipynb")
    result = run_check(f"{M01}.tf_graph", notebook=nb, course=course, zygote=zygote)
    part = result.parts[0]
    assert part.status == "failed" and part.points == 0, part.message
    assert "no attribute 'get_concrete_function'" in part.message

    honest = {"tf_loss_and_grad_graph": "tf_loss_and_grad_graph = tf.function(tf_loss_and_grad)\n"}
    nb = notebook_with(course.module(M01).solution, _patched(honest, "tf_loss_and_grad_graph"), tmp_path / "c.ipynb")
    result = run_check(f"{M01}.tf_graph", notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()


def _source(notebook, grade_id: str) -> str:
    import json
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return "".join(cell["source"])
    raise KeyError(grade_id)


# The TensorFlow behaviour the verdicts rest on, checked directly on the grader's helpers in a plain interpreter:
# a step with no signature runs one graph per batch size, one with reduce_retracing two, one with an input_signature
# one; and a saved graph keeps the shapes it was traced for, so a fixed-shape graph cannot pose as a general one.
UNIT = '''
import os
os.chdir(os.environ["SCRATCH"])
import numpy as np
import tensorflow as tf
from autograder.worker.m01_tensors import accepts, graphs_used, load_saved, saved_bytes

def step_fn(w):
    def step(x):
        return tf.reduce_sum(tf.matmul(x, w))
    return step

w = tf.Variable(np.ones((3, 2), np.float32))
batches = [(tf.ones((n, 3)),) for n in (5, 7, 9, 11)]
steps = {"plain": tf.function(step_fn(w)), "reduce": tf.function(step_fn(w), reduce_retracing=True),
         "signature": tf.function(step_fn(w), input_signature=[tf.TensorSpec([None, 3])])}
counts = {name: len(graphs_used(step, batches)) for name, step in steps.items()}
assert counts == {"plain": 4, "reduce": 2, "signature": 1}, counts
loaded = load_saved(saved_bytes("unit", graphs_used(steps["plain"], batches)[-1:], [w]))
assert not accepts(loaded.graphs[0], [tf.ones((4, 3))]) and accepts(loaded.graphs[0], [tf.ones((11, 3))])
print("ok")
'''


def test_the_graph_counts_the_verdicts_rest_on(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "SCRATCH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", UNIT], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]
