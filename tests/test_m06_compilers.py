"""Module 06: plausible wrong answers fail with a message that teaches; other correct answers pass."""
import pytest

from autograder import run_check

from conftest import ROOT, notebook_with, parts

pytestmark = pytest.mark.slow

MID = "06_compilers"
SOLUTION = ROOT / "solutions" / MID / f"{MID}.ipynb"

WRONG = {
    # .item() left in: one graph break remains
    "fixed": '''
def fixed(x):
    y = x / x.abs().max().item()
    norm = torch.linalg.vector_norm(y)
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)
''',
    # no dynamic_shapes: every dimension of the example is a constant of the program
    "export_for_stream": '''
def export_for_stream(model, example, path):
    torch.export.save(torch.export.export(model, (example,)), path)
''',
    # torch.cond, but no dynamic_shapes: the batch size is frozen at the example's
    "export_gate": '''
class CondGate(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, x):
        h = torch.tanh(self.gate.hidden(x))
        return torch.cond(x.sum() > 0, lambda h: self.gate.up(h), lambda h: self.gate.down(h), (h,))


def export_gate(model, example, path):
    torch.export.save(torch.export.export(CondGate(model), (example,)), path)
''',
    # a tf.function, but not XLA
    "xla_norm_gelu": '''
@tf.function
def xla_norm_gelu(x, gamma, beta):
    mu, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = (x - mu) * tf.math.rsqrt(var + 1e-5) * gamma + beta
    return 0.5 * y * (1.0 + tf.tanh(0.7978845608028654 * (y + 0.044715 * y ** 3)))
''',
    # `>=` where Gate has `>`: right everywhere except at x.sum() == 0
    "tf_gate": '''
def tf_gate(x, w1, b1, w2, b2, w3, b3):
    h = tf.tanh(tf.matmul(x, w1, transpose_b=True) + b1)
    return tf.cond(tf.reduce_sum(x) >= 0,
                   lambda: tf.matmul(h, w2, transpose_b=True) + b2,
                   lambda: tf.matmul(h, w3, transpose_b=True) + b3)
''',
}

WRONG_TORCH = {
    # a print before any tensor work: explain counts no break, fullgraph=True raises
    "fixed": '''
def fixed(x):
    print("fixing", tuple(x.shape))
    y = x / x.abs().max()
    norm = torch.linalg.vector_norm(y)
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)
''',
    # only the batch declared dynamic: the length is frozen, and the stream's 5th shape is refused
    "export_for_stream": '''
def export_for_stream(model, example, path):
    ep = torch.export.export(model, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, path)
''',
    # the model exported as it is: its Python `if` cannot be exported
    "export_gate": '''
def export_gate(model, example, path):
    torch.export.save(torch.export.export(model, (example,)), path)
''',
}

ALTERNATIVES = {
    # torch.cond instead of torch.where
    "fixed": '''
def fixed(x):
    y = x / x.abs().max()
    norm = torch.linalg.vector_norm(y)
    return torch.cond(y.sum() > 0, lambda y, n: y * n, lambda y, n: torch.tanh(y) - n, (y, norm))
''',
    # Dim.DYNAMIC in a tuple, strict export, saved through a file object
    "export_for_stream": '''
def export_for_stream(model, example, path):
    dynamic = torch.export.Dim.DYNAMIC
    ep = torch.export.export(model, (example,), dynamic_shapes=({0: dynamic, 1: dynamic},), strict=True)
    with open(path, "wb") as f:
        torch.export.save(ep, f)
''',
    # non-strict export of a module built from the parts, Dim.DYNAMIC, torch.cond on named functions
    "export_gate": '''
class Heads(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.hidden, self.up, self.down = gate.hidden, gate.up, gate.down

    def forward(self, x):
        h = torch.tanh(self.hidden(x))

        def up(h):
            return self.up(h)

        def down(h):
            return self.down(h)
        return torch.cond(x.sum() > 0, up, down, [h])


def export_gate(model, example, path):
    ep = torch.export.export(Heads(model).eval(), (example,), strict=False,
                             dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(ep, path)
''',
    # tf.function(fn, jit_compile=True) around a plain function using tf.nn.moments
    "xla_norm_gelu": '''
def _norm_gelu(x, gamma, beta):
    mu, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = tf.nn.batch_normalization(x, mu, var, beta, gamma, 1e-5)
    return tf.nn.gelu(y, approximate=True)


xla_norm_gelu = tf.function(_norm_gelu, jit_compile=True)
''',
    # AutoGraph: a Python `if` on a tensor inside a tf.function becomes tf.cond
    "tf_gate": '''
@tf.function
def tf_gate(x, w1, b1, w2, b2, w3, b3):
    h = tf.tanh(x @ tf.transpose(w1) + b1)
    if tf.reduce_sum(x) > 0:
        return h @ tf.transpose(w2) + b2
    return h @ tf.transpose(w3) + b3
''',
}


def test_wrong_answers_fail_with_a_message_that_teaches(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG, tmp_path / "wrong.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote))
    assert all(not p.passed for p in got.values()), {k: p.message for k, p in got.items()}
    m = got["no_breaks"].message
    assert "1 graph break(s)" in m and "item()" in m and "keep it a tensor" in m, m
    m = got["few_recompiles"].message
    assert "serves 1 of the stream's 8 shapes" in m and "batch size was frozen" in m and "dynamic_shapes" in m, m
    m = got["export_cond"].message
    assert "batch size was frozen" in m and "dynamic_shapes" in m, m
    m = got["xla_equal"].message
    assert "not compiled with XLA" in m and "jit_compile=True" in m, m
    m = got["cond_agree"].message
    assert "x.sum() == 0" in m and "tf_gate differs from float64 NumPy" in m and "same strict comparison" in m, m


def test_more_wrong_answers_torch_side(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG_TORCH, tmp_path / "wrong_torch.ipynb")
    got = parts(run_check(MID, notebook=nb, course=course, zygote=zygote, framework="torch"))
    m = got["no_breaks"].message
    assert not got["no_breaks"].passed and "fullgraph=True) raises" in m and "print" in m, m
    m = got["few_recompiles"].message
    assert not got["few_recompiles"].passed and "serves 4 of the stream's 8 shapes" in m, m
    assert "length was frozen" in m and "dynamic=None" in m, m
    m = got["export_cond"].message
    assert not got["export_cond"].passed and "cannot keep a Python `if`" in m and "torch.cond" in m, m


ALTERNATIVES_STRUCTURE = {
    # the three steps of tangled as helper functions, each kept a tensor
    "fixed": '''
def scaled_by_max_magnitude(x):
    return x / x.abs().max()


def frobenius_norm(y):
    return torch.sqrt((y * y).sum())


def fold_by_sign(y, norm):
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)


def fixed(x):
    y = scaled_by_max_magnitude(x)
    return fold_by_sign(y, frobenius_norm(y))
''',
    # a wrapper module with its own argument name, bounded named Dims (the text gives sizes 2 to 32)
    "export_for_stream": '''
class StreamProgram(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, tokens):
        return self.inner(tokens)


def export_for_stream(model, example, path):
    batch = torch.export.Dim("batch", min=2, max=64)
    length = torch.export.Dim("length", min=2, max=64)
    program = torch.export.export(StreamProgram(model), (example,),
                                  dynamic_shapes={"tokens": {0: batch, 1: length}})
    torch.export.save(program, path)
''',
    # a subclass of Gate whose forward uses torch.cond on bound methods, weights copied with load_state_dict
    "export_gate": '''
class CondGate(Gate):
    def head_up(self, h):
        return self.up(h)

    def head_down(self, h):
        return self.down(h)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return torch.cond(x.sum() > 0, self.head_up, self.head_down, (h,))


def export_gate(model, example, path):
    gate = CondGate()
    gate.load_state_dict(model.state_dict())
    program = torch.export.export(gate.eval(), (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, path)
''',
    # a tf.Module whose __init__ builds the XLA tf.function around its method, layer norm and GELU as helpers
    "xla_norm_gelu": '''
class NormGelu(tf.Module):
    def __init__(self, epsilon=1e-5):
        super().__init__()
        self.epsilon = epsilon
        self.compiled = tf.function(self.__call__, jit_compile=True)

    def layer_norm(self, x, gamma, beta):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.math.reduce_variance(x, axis=-1, keepdims=True)
        return (x - mean) / tf.sqrt(variance + self.epsilon) * gamma + beta

    @staticmethod
    def gelu_tanh(y):
        return 0.5 * y * (1.0 + tf.tanh(np.sqrt(2.0 / np.pi) * (y + 0.044715 * tf.pow(y, 3))))

    def __call__(self, x, gamma, beta):
        return self.gelu_tanh(self.layer_norm(x, gamma, beta))


xla_norm_gelu = NormGelu().compiled
''',
    # named branch functions and a dense helper; no tf.function
    "tf_gate": '''
def dense(h, weight, bias):
    return tf.matmul(h, weight, transpose_b=True) + bias  # PyTorch layout: (out, in)


def tf_gate(x, w1, b1, w2, b2, w3, b3):
    h = tf.tanh(dense(x, w1, b1))

    def up_head():
        return dense(h, w2, b2)

    def down_head():
        return dense(h, w3, b3)

    return tf.cond(tf.greater(tf.reduce_sum(x), 0.0), up_head, down_head)
''',
}

ALTERNATIVES_STYLE = {
    # branch-free arithmetic blend by a 0/1 mask, amax and pow/sqrt, type hints
    "fixed": '''
def fixed(x: torch.Tensor) -> torch.Tensor:
    y = x / x.abs().amax()
    norm = y.pow(2).sum().sqrt()
    positive = (y.sum() > 0).to(y.dtype)  # 1.0 or 0.0: the other term is multiplied away exactly
    return positive * (y * norm) + (1.0 - positive) * (torch.tanh(y) - norm)
''',
    # Dim.AUTO, keyed by the forward's argument name; torch.export.save with keyword arguments
    "export_for_stream": '''
def export_for_stream(model: nn.Module, example: torch.Tensor, path: str) -> None:
    auto = torch.export.Dim.AUTO
    program = torch.export.export(model, args=(example,), dynamic_shapes={"x": {0: auto, 1: auto}})
    torch.export.save(ep=program, f=path)
''',
    # F.linear on explicit weights passed to torch.cond as operands; the Dim given min=1 for the one-row batch
    "export_gate": '''
import torch.nn.functional as F


class CondGate(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, x):
        g = self.gate
        h = torch.tanh(F.linear(x, g.hidden.weight, g.hidden.bias))
        operands = (h, g.up.weight, g.up.bias, g.down.weight, g.down.bias)
        return torch.cond(x.sum() > 0,
                          lambda h, w_up, b_up, w_down, b_down: F.linear(h, w_up, b_up),
                          lambda h, w_up, b_up, w_down, b_down: F.linear(h, w_down, b_down),
                          operands)


def export_gate(model, example, path):
    rows = torch.export.Dim("rows", min=1)
    torch.export.save(torch.export.export(CondGate(model), (example,), dynamic_shapes=({0: rows},)), path)
''',
    # computed in float64 inside the XLA function and cast back to float32: different, more precise numerics
    "xla_norm_gelu": '''
@tf.function(jit_compile=True)
def xla_norm_gelu(x, gamma, beta):
    x64, gamma64, beta64 = (tf.cast(t, tf.float64) for t in (x, gamma, beta))
    centred = x64 - tf.reduce_mean(x64, axis=-1, keepdims=True)
    variance = tf.reduce_mean(centred * centred, axis=-1, keepdims=True)
    y = centred / tf.sqrt(variance + 1e-5) * gamma64 + beta64
    inner = tf.constant(np.sqrt(2.0 / np.pi), tf.float64) * (y + 0.044715 * y * y * y)
    return tf.cast(0.5 * y * (1.0 + tf.tanh(inner)), x.dtype)
''',
    # einsum in PyTorch's layout, tf.cond with keyword arguments
    "tf_gate": '''
def tf_gate(x, w1, b1, w2, b2, w3, b3):
    h = tf.tanh(tf.einsum("ni,oi->no", x, w1) + b1)
    return tf.cond(pred=tf.reduce_sum(x) > 0,
                   true_fn=lambda: tf.einsum("ni,oi->no", h, w2) + b2,
                   false_fn=lambda: tf.einsum("ni,oi->no", h, w3) + b3)
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_alternative_correct_answers_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(SOLUTION, answers, tmp_path / "alt.ipynb")
    result = run_check(MID, notebook=nb, course=course, zygote=zygote)
    assert result.passed, {p.id: p.message for p in result.parts}


def test_a_fixed_that_reads_its_input_sizes_passes(course, tmp_path, zygote):
    """Python that reads x's sizes exports for that shape only (torch.compile would recompile, not break): no graph
    break, so part 1 passes, judged on inputs of the exported shape."""
    sized = '''
def fixed(x):
    rows = int(x.shape[0])
    y = x / x.abs().max()
    norm = torch.sqrt((y * y).sum() + 0.0 * rows)
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)
'''
    nb = notebook_with(SOLUTION, {"fixed": sized}, tmp_path / "sized.ipynb")
    part = run_check(f"{MID}.no_breaks", notebook=nb, course=course, zygote=zygote, framework="torch").parts[0]
    assert part.passed, part.message
