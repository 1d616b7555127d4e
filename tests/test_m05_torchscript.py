"""Module 05: plausible wrong answers fail with a message that teaches; other correct answers pass."""
import pytest

from autograder import run_check
from conftest import ROOT, notebook_with, parts

pytestmark = pytest.mark.slow

MID = "05_torchscript"
SOLUTION = ROOT / "solutions" / MID / f"{MID}.ipynb"

WRONG = {
    # traced, not scripted: right on the example's branch only
    "script_model": '''
def script_model(model):
    return torch.jit.trace(model, torch.ones(2, 4))
''',
    # twice the example: the same sign, so the same (frozen) branch
    "counterexample": '''
def counterexample(example):
    return example * 2
''',
    # a pickle of the Python object, not a TorchScript archive
    "save_torchscript": '''
def save_torchscript(model, path):
    torch.save(model, path)
''',
    # no input_signature: only the batch size traced before saving survives in the SavedModel
    "save_savedmodel": '''
class Gated(tf.Module):
    def __init__(self, state):
        super().__init__()
        self.w = [tf.Variable(state[k].T if state[k].ndim == 2 else state[k]) for k in
                  ("hidden.weight", "hidden.bias", "up.weight", "up.bias", "down.weight", "down.bias")]

    @tf.function
    def __call__(self, x):
        w1, b1, w2, b2, w3, b3 = self.w
        h = tf.tanh(x @ w1 + b1)
        if tf.reduce_sum(x) > 0:
            return h @ w2 + b2
        return h @ w3 + b3


def save_savedmodel(state, path):
    m = Gated(state)
    m(tf.ones((2, 4)))  # traced once, for a batch of 2
    tf.saved_model.save(m, path)
''',
}

# the notebook's own model, not the one the grader passed: wrong weights
WRONG_WEIGHTS = {"save_torchscript": '''
def save_torchscript(m, path):
    torch.jit.script(model).save(path)
'''}

WRONG_2 = {
    # no compilation at all
    "script_model": "def script_model(model):\n    return model\n",
    # a batch of zeros takes `down`: the same branch as a negative example
    "counterexample": "def counterexample(example):\n    return torch.zeros(3, 4)\n",
    # `>=` where PyTorch has `>`: right everywhere except at x.sum() == 0
    "save_savedmodel": '''
def save_savedmodel(state, path):
    v = {k: tf.Variable(a.T if a.ndim == 2 else a) for k, a in state.items()}
    m = tf.Module()
    m.v = v

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def serve(x):
        h = tf.tanh(x @ v["hidden.weight"] + v["hidden.bias"])
        if tf.reduce_sum(x) >= 0:
            return h @ v["up.weight"] + v["up.bias"]
        return h @ v["down.weight"] + v["down.bias"]

    m.serve = serve
    tf.saved_model.save(m, path, signatures=serve)
''',
}

ALTERNATIVES = {
    # scripting a wrapper module instead of the model itself
    "script_model": '''
class Wrapper(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def script_model(model):
    return torch.jit.script(Wrapper(model))
''',
    # a constant input of the opposite sign
    "counterexample": '''
def counterexample(example):
    return torch.full((1, 4), -1.0 if example.sum() > 0 else 1.0)
''',
    # torch.jit.save of a frozen scripted module
    "save_torchscript": '''
def save_torchscript(model, path):
    torch.jit.save(torch.jit.freeze(torch.jit.script(model.eval())), path)
''',
    # a plain tf.function over a tf.Module's variables, tf.cond written by hand, exported with signatures=
    "save_savedmodel": '''
def save_savedmodel(state, path):
    m = tf.Module()
    m.v = [tf.Variable(state[k]) for k in
           ("hidden.weight", "hidden.bias", "up.weight", "up.bias", "down.weight", "down.bias")]

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(x):
        w1, b1, w2, b2, w3, b3 = m.v
        h = tf.tanh(tf.matmul(x, w1, transpose_b=True) + b1)
        return tf.cond(tf.reduce_sum(x) > 0,
                       lambda: tf.matmul(h, w2, transpose_b=True) + b2,
                       lambda: tf.matmul(h, w3, transpose_b=True) + b3)

    m.serve = serve
    tf.saved_model.save(m, path, signatures={"serving_default": serve})
''',
}


def test_wrong_answers_fail_with_a_message_that_teaches(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG, tmp_path / "wrong.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote))
    assert all(not p.passed for p in got.values()), {k: p.message for k, p in got.items()}
    assert "traced, not scripted: the branch was frozen" in got["scripted"].message
    assert "takes the same branch as example" in got["counterexample"].message
    assert "not a TorchScript archive" in got["torchscript_file"].message
    assert "torch.save pickles" in got["torchscript_file"].message
    assert "input_signature" in got["savedmodel"].message and "has no function for a batch" in got["savedmodel"].message
    assert "not a TorchScript archive" in got["exports_agree"].message


def test_more_wrong_answers(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG_2, tmp_path / "wrong2.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote))
    assert "eager nn.Module, not a TorchScript module" in got["scripted"].message
    assert "takes the same branch as example" in got["counterexample"].message
    assert got["torchscript_file"].passed, got["torchscript_file"].message
    # the `>=` boundary hides from batches with a clear sign and shows only where the sum is exactly 0
    assert got["savedmodel"].passed, got["savedmodel"].message
    part = got["exports_agree"]
    assert not part.passed
    assert "x.sum() == 0" in part.message and "the SavedModel differs from float64 NumPy" in part.message
    assert "same strict comparison" in part.message


def test_an_export_with_the_wrong_weights_fails(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG_WEIGHTS, tmp_path / "weights.ipynb")
    part = run_check(f"{MID}.torchscript_file", notebook=nb, course=course, zygote=zygote, framework="torch").parts[0]
    assert not part.passed
    assert "Did you save the model you were given" in part.message


def test_alternative_correct_answers_pass(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, ALTERNATIVES, tmp_path / "alt.ipynb")
    result = run_check(MID, notebook=nb, course=course, zygote=zygote)
    assert result.passed, {p.id: p.message for p in result.parts}


# Patching the loaders in the notebook: the student's own process then "loads" anything. The grader loads the
# files' bytes in a fresh worker that never runs the student's code, so junk stays junk.
PATCHED_LOADERS = {
    "save_torchscript": '''
def save_torchscript(model, path):
    with open(path, "wb") as f:
        f.write(b"not an archive")
    torch.jit.load = lambda *args, **kwargs: model
''',
    "save_savedmodel": '''
def save_savedmodel(state, path):
    import os
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    v = {k: tf.constant(a.T if a.ndim == 2 else a) for k, a in state.items()}

    def serve(x):
        h = tf.tanh(x @ v["hidden.weight"] + v["hidden.bias"])
        return h @ v["up.weight"] + v["up.bias"] if float(tf.reduce_sum(x)) > 0 else h @ v["down.weight"] + v["down.bias"]

    class Loaded:
        signatures = {"serving_default": serve}

    tf.saved_model.load = lambda *args, **kwargs: Loaded()
''',
}


def test_patching_the_loaders_in_the_notebook_gains_nothing(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, PATCHED_LOADERS, tmp_path / "patched.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote))
    for pid in ("torchscript_file", "savedmodel", "exports_agree"):
        assert not got[pid].passed and "in a fresh process" in got[pid].message, (pid, got[pid].message)
    assert "torch.jit.load cannot read your file" in got["torchscript_file"].message
    assert "tf.saved_model.load cannot read your SavedModel" in got["savedmodel"].message
