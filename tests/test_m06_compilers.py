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


def test_alternative_correct_answers_pass(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, ALTERNATIVES, tmp_path / "alt.ipynb")
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
