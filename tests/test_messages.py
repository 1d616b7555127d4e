"""Messages that fit the failure (issue 13, item 5): the hint shown is the one for the failure the grader diagnosed,
a cross-framework failure names both sides and the float64 truth, and an input the student's code changes in place
is caught by the parent, which compares what it sent with what the worker holds after the call."""
import numpy as np
import pytest

from autograder import run_check
from autograder._compare import DIAGNOSES, Mismatch, compare, diagnose

from conftest import notebook_with

M = "01_tensors"

TF_SUM = '''
def tf_loss_and_grad(w, x, y):
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_sum(tf.square(tf.linalg.matvec(x, w) - y))
    return loss, tape.gradient(loss, w)
'''

TF_UNWATCHED = '''
def tf_loss_and_grad(w, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
    return loss, tape.gradient(loss, w)
'''

# A right answer in every value, except that it trains the caller's w0 in place.
TORCH_IN_PLACE = '''
def torch_fit(w0, x, y, lr, steps):
    w = w0.requires_grad_()
    for _ in range(steps):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
        w.grad = None
    return w.detach()
'''


# -- the parent's diagnosis, on arrays -------------------------------------------------------------------------------
def test_diagnose_names_simple_relations_and_nothing_else():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 3))
    assert diagnose(e * 40, e)[0] == "scaled" and "40×" in diagnose(e * 40, e)[1]
    assert diagnose(-e, e)[0] == "negated"
    assert diagnose(e.T, e)[0] == "transposed"
    assert diagnose(np.zeros_like(e), e)[0] == "zero"
    assert diagnose(e + rng.normal(size=e.shape), e) is None      # just wrong: no story to tell
    assert diagnose(e, e) is None
    assert diagnose(np.array(3.7 * 1.3), np.array(1.3)) is None    # one wrong number is always some multiple
    assert diagnose(np.array(64 * 1.3), np.array(1.3))[0] == "scaled"   # a whole factor: a sum over 64 for a mean
    with pytest.raises(Mismatch) as err:
        compare((e * 3).astype(np.float32), e.astype(np.float32), "f", rtol=1e-4, atol=1e-5)
    assert err.value.diagnosis == "scaled" and "(every value is 3× the expected one)" in str(err.value)


def test_every_registry_hint_names_a_diagnosis_the_grader_makes(course):
    keyed = [(m.id, p.id, key) for m in course.modules for p in m.exercise.parts for key in p.hints]
    assert keyed, "no part carries a diagnosis-keyed hint"
    assert all(key in DIAGNOSES for _, _, key in keyed)


# -- through a check ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_hint_follows_the_diagnosed_failure(course, tmp_path, zygote):
    """A sum for a mean gets the reduce_mean hint, not the part's stock tape.watch hint (issue 13's finding); an
    unwatched tensor gets the tape.watch hint."""
    part = next(p for p in course.module(M).exercise.parts if p.id == "tf_grad")
    summed = notebook_with(course.module(M).solution, {"tf_loss_and_grad": TF_SUM}, tmp_path / "sum.ipynb")
    (p,) = run_check(f"{M}.tf_grad", notebook=summed, course=course, zygote=zygote).parts
    assert p.status == "failed" and "× the expected one" in p.message, p.message
    assert p.hint == part.hints["scaled"] and "reduce_mean" in p.hint and p.hint != part.hint
    unwatched = notebook_with(course.module(M).solution, {"tf_loss_and_grad": TF_UNWATCHED}, tmp_path / "w.ipynb")
    (p,) = run_check(f"{M}.tf_grad", notebook=unwatched, course=course, zygote=zygote).parts
    assert p.status == "failed" and "is None" in p.message, p.message
    assert p.hint == part.hints["none"] and "tape.watch" in p.hint


@pytest.mark.slow
def test_a_cross_framework_failure_names_both_sides_and_the_truth(course, tmp_path, zygote):
    summed = notebook_with(course.module(M).solution, {"tf_loss_and_grad": TF_SUM}, tmp_path / "sum.ipynb")
    (p,) = run_check(f"{M}.cross_grad", notebook=summed, course=course, zygote=zygote).parts
    assert p.status == "failed"
    assert p.message.startswith("tf_loss_and_grad is off [loss]: torch_loss_and_grad gave "), p.message
    assert ", tf_loss_and_grad gave " in p.message and ", float64 NumPy gives " in p.message, p.message
    assert "× the expected one" in p.message and "reduce" not in p.message, p.message
    assert p.hint == next(q for q in course.module(M).exercise.parts if q.id == "cross_grad").hints["scaled"]


@pytest.mark.slow
def test_an_input_changed_in_place_is_caught_by_the_parent(course, tmp_path, zygote):
    """`Do not modify w0` is stated; the values the function returns are right, so only the parent's comparison of
    the input it sent with the input after the call can tell."""
    nb = notebook_with(course.module(M).solution, {"torch_fit": TORCH_IN_PLACE}, tmp_path / "inplace.ipynb")
    (p,) = run_check(f"{M}.same_weights", notebook=nb, course=course, zygote=zygote).parts
    assert p.status == "failed" and p.message.startswith("torch_fit changed its argument 1 "), p.message
    assert "in place" in p.message and "copy" in p.message
    assert p.hint == next(q for q in course.module(M).exercise.parts if q.id == "same_weights").hints["mutated"]


# -- files the student saved ---------------------------------------------------------------------------------------
def test_an_empty_truncated_or_foreign_file_is_named_for_what_it_is(tmp_path):
    import io
    import pickle
    import zipfile

    from autograder.worker import _files
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert _files.problem(str(empty), "zip").startswith("empty (0 bytes)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"x" * 5000)
    whole = tmp_path / "whole.pt"
    whole.write_bytes(buf.getvalue())
    assert _files.problem(str(whole), "zip") is None
    cut = tmp_path / "cut.pt"
    cut.write_bytes(buf.getvalue()[:2000])
    assert _files.problem(str(cut), "zip").startswith("a truncated ZIP archive (2,000 bytes")
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    assert _files.problem(str(pickled), "zip").startswith("not a ZIP archive but a plain pickle")
    assert _files.problem(str(pickled), "torch.save") is None     # torch.load reads the legacy format too
    assert _files.problem(str(whole), "tflite").startswith("not a TensorFlow Lite model")


EMPTY_TORCHSCRIPT = '''
def save_torchscript(model, path):
    open(path, "wb").close()
'''


@pytest.mark.slow
def test_an_empty_torchscript_file_is_said_to_be_empty(course, tmp_path, zygote):
    """It read "not a ZIP archive ... torch.save pickles the Python object" (issue 13's finding)."""
    m = "05_torchscript"
    nb = notebook_with(course.module(m).solution, {"save_torchscript": EMPTY_TORCHSCRIPT}, tmp_path / "empty.ipynb")
    (p,) = run_check(f"{m}.torchscript_file", notebook=nb, course=course, zygote=zygote).parts
    assert p.status == "failed" and p.message.startswith("save_torchscript left a file at "), p.message
    assert "that is empty (0 bytes)" in p.message, p.message
    assert "pickles" not in p.message


def test_a_notebook_from_another_exercise_is_recognised(course, tmp_path):
    """A module 04 notebook checked as 01 said only "not defined" for every function (issue 13's finding). The
    notebook is refused before any worker starts, in one line naming the exercise it holds."""
    from autograder._source import NotebookError
    other = course.module("04_tf_function").exercise_notebook
    with pytest.raises(NotebookError) as err:
        run_check(M, notebook=other, course=course)
    text = str(err.value)
    assert "holds exercise 04_tf_function's answers (" in text and "none of 01_tensors's" in text, text
    assert f"clash check 04_tf_function --notebook {other}" in text and "\n" not in text


def test_the_cli_names_the_exercise_a_notebook_holds(course):
    from click.testing import CliRunner

    from autograder.cli import main
    other = course.module("04_tf_function").exercise_notebook
    out = CliRunner().invoke(main, ["check", M, "--notebook", str(other)])
    assert out.exit_code != 0 and "holds exercise 04_tf_function's answers" in out.output, out.output
    assert "Traceback" not in out.output
