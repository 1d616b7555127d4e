"""Course integrity, in the spirit of rustlings' `dev check`: every solution passes, every untouched exercise
fails with one clear message per part, wrong answers fail with teaching messages, and cheats gain nothing."""
import json
import subprocess
import sys

import pytest

from autograder import run_check

from conftest import ROOT, notebook_with, parts

pytestmark = pytest.mark.slow


def clash(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_every_solution_passes(module, course, zygote):
    result = run_check(module.id, notebook=module.solution, course=course, zygote=zygote)
    assert result.passed and result.score == result.max_score == module.exercise.max_score, \
        [(p.id, p.message) for p in result.parts if not p.passed]
    assert result.device.startswith(("cpu", "cuda"))


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_every_untouched_exercise_fails_with_one_clear_message_per_part(module, course, zygote):
    result = run_check(module.id, notebook=module.exercise_notebook, course=course, zygote=zygote)
    assert result.score == 0 and len(result.parts) == len(module.exercise.parts)
    for part in result.parts:
        assert part.status == "failed"
        assert "\n" not in part.message and "Traceback" not in part.message
        assert "not written yet" in part.message or "is not defined" in part.message, part.message


@pytest.mark.parametrize("notebook, code", [("solution", 0), ("exercise_notebook", 1)])
def test_the_cli_checks_in_fresh_interpreters_as_a_self_learner_runs_it(notebook, code):
    """The tests above share one zygote per test process, as a kernel and `clash grade` do; `clash check` starts
    its own. The same check, the same result object, as JSON, with the exit code a shell script reads."""
    module = modules()[0]
    run = clash("check", module.id, "--notebook", str(getattr(module, notebook)), "--json")
    assert run.returncode == code, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["score"] == (result["max_score"] if code == 0 else 0)
    assert all(p["status"] == ("passed" if code == 0 else "failed") for p in result["parts"])
    assert result["device"].startswith(("cpu", "cuda"))
    assert run.stderr == ""


WRONG = {
    # the sum instead of the mean: right shape and type, wrong values
    "torch_loss_and_grad": '''
def torch_loss_and_grad(w, x, y):
    w = w.detach().clone().requires_grad_(True)
    loss = ((x @ w - y) ** 2).sum()
    loss.backward()
    return loss.detach(), w.grad
''',
    # NumPy arrays where tensors are required
    "tf_loss_and_grad": '''
def tf_loss_and_grad(w, x, y):
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
    return loss.numpy(), tape.gradient(loss, w).numpy()
''',
    # float64 leaking in from NumPy
    "torch_fit": '''
def torch_fit(w0, x, y, lr, steps):
    w = torch.from_numpy(w0.numpy().astype("float64")).requires_grad_(True)
    x, y = x.double(), y.double()
    for _ in range(steps):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
        w.grad = None
    return w.detach()
''',
    # not a graph at all
    "tf_loss_and_grad_graph": "tf_loss_and_grad_graph = tf_loss_and_grad\n",
}


def test_wrong_answers_fail_with_messages_that_teach(course, tmp_path):
    module = course.module("01_tensors")
    nb = notebook_with(module.solution, WRONG, tmp_path / "wrong.ipynb")
    result = run_check("01_tensors", notebook=nb, course=course)
    by_id = parts(result)
    assert not result.passed
    assert by_id["torch_grad"].status == "failed"
    assert "torch_loss_and_grad [loss]" in by_id["torch_grad"].message and "max abs err" in by_id["torch_grad"].message
    assert "is a numpy.float32, expected a tf.Tensor (did you call .item() or .numpy()?" in by_id["tf_grad"].message
    assert by_id["cross_grad"].status == "failed"
    assert "dtype float64, expected float32" in by_id["same_weights"].message
    assert "plain Python function, not a tf.function" in by_id["tf_graph"].message
    assert by_id["graph_speed"].status == "failed"
    assert result.score == 0


CHEAT = '''
import time
import numpy as np

# Patch every comparison and clock the student's process can reach ...
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
tf.debugging.assert_near = lambda *a, **k: None
time.perf_counter = lambda: 0.0
time.perf_counter_ns = lambda: 0
time.monotonic = lambda: 0.0

class AlwaysEqual:
    """... and answer with an object equal to everything."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __array__(self, *a, **k): return np.zeros(())

def torch_loss_and_grad(w, x, y):
    return AlwaysEqual(), AlwaysEqual()

def tf_loss_and_grad(w, x, y):                      # garbage of the right type
    return tf.zeros(()), tf.zeros_like(w)

_memo = {}
def torch_fit(w0, x, y, lr, steps):                 # memoised: the first answer, for ever
    return _memo.setdefault("w", w0.clone() * 0 + 1)

def tf_fit(w0, x, y, lr, steps):
    return tf.ones_like(w0)

_graph_memo = {}
_real = tf.function(lambda w, x, y: (tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y)), w))
def tf_loss_and_grad_graph(w, x, y):                # fast because it remembers, not because it computes
    key = tuple(x.shape)
    if key not in _graph_memo:
        _graph_memo[key] = _real(w, x, y)
    return _graph_memo[key]
tf_loss_and_grad_graph.experimental_get_tracing_count = lambda: 0
'''


def test_a_cheating_submission_scores_zero(course, tmp_path):
    module = course.module("01_tensors")
    blank = {gid: "" for gid in ("torch_loss_and_grad", "tf_loss_and_grad", "torch_fit", "tf_fit")}
    nb = notebook_with(module.solution, {**blank, "tf_loss_and_grad_graph": CHEAT}, tmp_path / "cheat.ipynb")
    result = run_check("01_tensors", notebook=nb, course=course)
    for part in result.parts:
        assert part.status == "failed" and part.points == 0, (part.id, part.message)
    assert result.score == 0
    messages = {p.id: p.message for p in result.parts}
    assert "AlwaysEqual, expected a torch.Tensor" in messages["torch_grad"]
    assert "differ beyond" in messages["tf_grad"]


def test_one_framework_only_skips_the_other_and_says_so(course):
    module = course.module("01_tensors")
    result = run_check("01_tensors", notebook=module.solution, framework="torch", course=course)
    status = {p.id: p.status for p in result.parts}
    assert status["torch_grad"] == "passed"
    assert {status[k] for k in ("tf_grad", "cross_grad", "same_weights", "tf_graph", "graph_speed")} == {"skipped"}
    assert result.score == 2 and not result.passed
    assert "checked torch" in result.parts[1].message


def test_without_solutions_the_reference_parts_say_so_and_are_not_counted(course, tmp_path):
    import shutil
    for name in ("course.toml", "exercises"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    from autograder import load_course
    student_copy = load_course(tmp_path)
    nb = notebook_with(course.module("01_tensors").solution, {}, tmp_path / "mine.ipynb")
    # Module 01 checks everything against the grader's own numbers: a student's copy grades it in full.
    result = run_check("01_tensors", notebook=nb, course=student_copy)
    assert result.passed and result.score == 10, result.summary()
    # 09's `converges` compares with the reference's own training: without solutions it says so, for no points.
    capstone = notebook_with(course.module("09_capstone").solution, {}, tmp_path / "capstone.ipynb")
    (part,) = run_check("09_capstone.converges", notebook=capstone, course=student_copy).parts
    assert part.status == "needs-reference" and part.points == 0 and "not counted" in part.message, part


def test_each_run_draws_new_inputs(course):
    module = course.module("01_tensors")
    a = run_check("01_tensors.torch_grad", notebook=module.solution, framework="torch", course=course)
    b = run_check("01_tensors.torch_grad", notebook=module.solution, framework="torch", course=course)
    assert a.seed != b.seed and a.passed and b.passed
