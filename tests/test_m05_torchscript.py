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


ALTERNATIVES_STRUCTURE = {
    # a new scriptable module built from the model's layers, one return after an if/else
    "script_model": '''
class ScriptableGatedNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.hidden, self.up, self.down = net.hidden, net.up, net.down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.hidden(x))
        if bool(x.sum() > 0):
            out = self.up(h)
        else:
            out = self.down(h)
        return out


def script_model(model):
    return torch.jit.script(ScriptableGatedNet(model))
''',
    # a loop over fixed candidates, keeping the first whose sum has the other sign
    "counterexample": '''
def takes_up(batch):
    return bool(batch.sum() > 0)


def counterexample(example):
    for candidate in (torch.ones(2, 4), -torch.ones(2, 4)):
        if takes_up(candidate) != takes_up(example):
            return candidate
''',
    # reuses Part 1's script_model instead of scripting again
    "save_torchscript": '''
def save_torchscript(model, path):
    script_model(model).save(path)
''',
    # a tf.Module subclass with a dict of layers, a _linear helper, tf.cond, and the signature from its method
    "save_savedmodel": '''
class TFGatedNet(tf.Module):
    def __init__(self, state):
        super().__init__(name="gated_net")
        # kept in PyTorch's (out, in) layout; _linear multiplies by the transpose
        self.layers = {name: [tf.Variable(state[f"{name}.weight"]), tf.Variable(state[f"{name}.bias"])]
                       for name in ("hidden", "up", "down")}

    def _linear(self, name, h):
        weight, bias = self.layers[name]
        return tf.matmul(h, weight, transpose_b=True) + bias

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def forward(self, x):
        h = tf.tanh(self._linear("hidden", x))
        return tf.cond(tf.reduce_sum(x) > 0, lambda: self._linear("up", h), lambda: self._linear("down", h))


def save_savedmodel(state, path):
    net = TFGatedNet(state)
    tf.saved_model.save(net, path, signatures=net.forward.get_concrete_function())
''',
}

ALTERNATIVES_STYLE = {
    # scripted, then frozen for inference (weights folded in as constants; the `if` stays)
    "script_model": '''
def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.freeze(torch.jit.script(model.eval()))
''',
    # an explicit-dtype ramp, its sign chosen in plain Python
    "counterexample": '''
def counterexample(example: torch.Tensor) -> torch.Tensor:
    sign = -1.0 if example.sum().item() > 0 else 1.0
    return sign * torch.arange(1, 9, dtype=torch.float32).reshape(2, 4)
''',
    # torch.jit.save into a file object, type hints
    "save_torchscript": '''
def save_torchscript(model: nn.Module, path: str) -> None:
    scripted = torch.jit.script(model)
    with open(path, "wb") as archive:
        torch.jit.save(scripted, archive)
''',
    # weights as captured tf.constants, einsum in PyTorch's layout, both heads computed and tf.where picks one
    "save_savedmodel": '''
def save_savedmodel(state, path):
    W = {name: tf.constant(array, dtype=tf.float32) for name, array in state.items()}

    def linear(layer, h):
        return tf.einsum("ni,oi->no", h, W[f"{layer}.weight"]) + W[f"{layer}.bias"]

    @tf.function(input_signature=[tf.TensorSpec(shape=(None, 4), dtype=tf.float32, name="x")])
    def gated_net(x):
        h = tf.tanh(linear("hidden", x))
        return tf.where(tf.reduce_sum(x) > 0, linear("up", h), linear("down", h))

    holder = tf.Module()
    holder.gated_net = gated_net
    tf.saved_model.save(holder, path, signatures=gated_net.get_concrete_function())
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_alternative_correct_answers_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(SOLUTION, answers, tmp_path / "alt.ipynb")
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
        up, down = h @ v["up.weight"] + v["up.bias"], h @ v["down.weight"] + v["down.bias"]
        return up if float(tf.reduce_sum(x)) > 0 else down

    class Loaded:
        signatures = {"serving_default": serve}

    tf.saved_model.load = lambda *args, **kwargs: Loaded()
''',
}


def test_patching_the_loaders_in_the_notebook_gains_nothing(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, PATCHED_LOADERS, tmp_path / "patched.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote))
    assert not got["savedmodel"].passed and "in a fresh process" in got["savedmodel"].message
    # The junk archive is named for what it is before anything loads it, patched loader or not.
    for pid in ("torchscript_file", "exports_agree"):
        assert not got[pid].passed, pid
        assert "that is not a ZIP archive but bytes that begin b'not an a'" in got[pid].message, got[pid].message
    assert "tf.saved_model.load cannot read your SavedModel" in got["savedmodel"].message
