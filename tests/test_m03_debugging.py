"""Module 03 (debugging with pdb): plausible wrong answers fail with a message that teaches; other correct answers
pass."""
from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np
import pytest

from autograder import run_check
from autograder._compare import Mismatch
from autograder._context import Context
from autograder._harness import _describe
from autograder.exercises.m03_debugging import PDB_PROGRAM, pdb_shifted
from autograder.worker import m03_debugging as worker_code

from conftest import ROOT, notebook_with

pytestmark = pytest.mark.slow
SOLUTION = ROOT / "solutions" / "03_debugging" / "03_debugging.ipynb"


def _messages(result) -> dict[str, tuple[str, str]]:
    return {p.id: (p.status, p.message) for p in result.parts}


def test_the_notebook_shows_the_grader_s_program_line_for_line():
    nb = json.loads(SOLUTION.read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "given_program")
    ns: dict = {}
    exec("".join(cell["source"]).split("\n\ndef try_pdb")[0], ns)
    assert ns["BUGGY_PROGRAM"] == PDB_PROGRAM


WRONG = {
    # Silencing the overflow instead of fixing it.
    "torch_attention": '''
def torch_attention(q, k, v):
    e = torch.exp(q @ k.T / q.shape[-1] ** 0.5)
    return torch.nan_to_num(e / e.sum(dim=-1, keepdim=True)) @ v
''',
    # divide_no_nan mends the constant column only; the tiny column is still divided.
    "tf_standardize": '''
@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
def tf_standardize(x):
    centred = x - tf.reduce_mean(x, axis=0, keepdims=True)
    return tf.math.divide_no_nan(centred, tf.math.reduce_std(centred, axis=0))
''',
    # Stops at the function's first line, before `shifted` exists.
    "pdb_commands": 'def pdb_commands():\n    return "b softmax_rows\\nc\\np shifted\\nc\\n"\n',
    # Right for one model only.
    "torch_first_nan_op": 'def torch_first_nan_op(model_fn, x):\n    return "SqrtBackward0"\n',
    # The whole error message instead of the op's name.
    "tf_first_nan_op": '''
def tf_first_nan_op(model_fn, x):
    tf.debugging.enable_check_numerics()
    try:
        model_fn(x)
    except tf.errors.InvalidArgumentError as e:
        return str(e)
    finally:
        tf.debugging.disable_check_numerics()
''',
}

WRONG_2 = {
    # Only the integer division left in.
    "torch_attention": '''
def torch_attention(q, k, v):
    return torch.softmax(q @ k.T / q.shape[-1] ** (1 // 2), dim=-1) @ v
''',
    # The graph dropped to dodge the Python `if` (the values are right).
    "tf_standardize": '''
def tf_standardize(x):
    centred = x - tf.reduce_mean(x, axis=0, keepdims=True)
    std = tf.math.reduce_std(centred, axis=0)
    return centred / tf.where(std < 1e-6, tf.ones_like(std), std)
''',
    # Right place, wrong variable.
    "pdb_commands": 'def pdb_commands():\n    return "b program.py:9\\nc\\np logits\\nc\\n"\n',
    # No backward pass: anomaly mode never fires, so nothing is found.
    "torch_first_nan_op": '''
def torch_first_nan_op(model_fn, x):
    with torch.autograd.detect_anomaly():
        out = model_fn(x)
    return None
''',
}

ALTERNATIVES = {
    # PyTorch's fused attention.
    "torch_attention": '''
def torch_attention(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None])[0]
''',
    # No input_signature (still a tf.function), the std written out, the mean without keepdims.
    "tf_standardize": '''
@tf.function
def tf_standardize(x):
    centred = x - tf.reduce_mean(x, axis=0)
    std = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=0))
    return centred / tf.where(std < 1e-6, 1.0, std)
''',
    # A file:line breakpoint on the line after the assignment, and pp instead of p.
    "pdb_commands": 'def pdb_commands():\n    return "b program.py:9\\nc\\npp shifted\\nc\\n"\n',
    # The global switch instead of the context manager, and the name from the first line of the message.
    "torch_first_nan_op": '''
def torch_first_nan_op(model_fn, x):
    x = x.detach().clone().requires_grad_(True)
    torch.autograd.set_detect_anomaly(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model_fn(x)
            out.backward(torch.ones_like(out))
    except RuntimeError as e:
        return str(e).split("'")[1]
    finally:
        torch.autograd.set_detect_anomaly(False)
''',
    # String splitting instead of a regular expression.
    "tf_first_nan_op": '''
def tf_first_nan_op(model_fn, x):
    tf.debugging.enable_check_numerics()
    try:
        model_fn(x)
        return "no NaN"
    except tf.errors.InvalidArgumentError as e:
        return e.message.split('op "')[1].split('"')[0]
    finally:
        tf.debugging.disable_check_numerics()
''',
}

# Another structure: an nn.Module, helpers behind tf.function called as a function, a list of commands joined, a
# helper that runs the backward pass, and a context manager class around check_numerics.
ALTERNATIVES_STRUCTURE = {
    # an nn.Module with the max-shifted softmax written out, called from the function
    "torch_attention": '''
class ScaledDotProductAttention(torch.nn.Module):
    def forward(self, q, k, v):
        scores = q @ k.transpose(0, 1) / q.shape[-1] ** 0.5
        scores = scores - scores.max(dim=1, keepdim=True).values   # exp of the largest score is 1: no overflow
        e = scores.exp()
        return (e / e.sum(dim=1, keepdim=True)) @ v


def torch_attention(q, k, v):
    return ScaledDotProductAttention()(q, k, v)
''',
    # helpers for the mean and the safe std, compiled by calling tf.function instead of the decorator
    "tf_standardize": '''
def _column_means(x):
    return tf.reduce_mean(x, axis=0, keepdims=True)


def _safe_std(centred):
    std = tf.math.reduce_std(centred, axis=0)
    return tf.where(std < 1e-6, tf.ones_like(std), std)


def _standardize(x):
    centred = x - _column_means(x)
    return centred / _safe_std(centred)


tf_standardize = tf.function(_standardize, input_signature=[tf.TensorSpec([None, None], tf.float32)])
''',
    # commands kept in a list and joined; a temporary breakpoint on the line after shifted's assignment
    "pdb_commands": '''
def pdb_commands():
    commands = [
        "tbreak program.py:9",   # weights = ...: shifted exists here
        "continue",
        "p shifted",
        "continue",
    ]
    return "\\n".join(commands) + "\\n"
''',
    # the backward pass in a helper that returns the error; the name taken by partition, not a regex
    "torch_first_nan_op": '''
def _anomaly_in_backward(model_fn, x):
    """The RuntimeError anomaly mode raises on the backward pass of model_fn(x).sum(), or None."""
    leaf = x.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.detect_anomaly():
            try:
                model_fn(leaf).sum().backward()
            except RuntimeError as error:
                return error
    return None


def torch_first_nan_op(model_fn, x):
    error = _anomaly_in_backward(model_fn, x)
    if error is None:
        return None
    _, _, rest = str(error).partition("Function '")
    return rest.partition("'")[0]
''',
    # a context manager class switching numerics checking on and off
    "tf_first_nan_op": '''
class NumericsChecked:
    def __enter__(self):
        tf.debugging.enable_check_numerics()
        return self

    def __exit__(self, *exc_info):
        tf.debugging.disable_check_numerics()
        return False


def tf_first_nan_op(model_fn, x):
    try:
        with NumericsChecked():
            model_fn(x)
    except tf.errors.InvalidArgumentError as error:
        return re.findall(r'op "(\\w+)"', error.message)[0]
    return None
''',
}

# Another style: einsum with logsumexp, tf.nn.moments with the test turned round, long command names with a step
# over the assignment, torch.autograd.grad with type hints, a compiled regex and lower case.
ALTERNATIVES_STYLE = {
    # einsum, and the softmax as exp(score - logsumexp) instead of torch.softmax
    "torch_attention": '''
def torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5
    scores = torch.einsum("nd,md->nm", q, k) * scale
    weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
    return torch.einsum("nm,me->ne", weights, v)
''',
    # tf.nn.moments for the biased variance, its sqrt, and the threshold test written as std >= 1e-6
    "tf_standardize": '''
@tf.function(input_signature=[tf.TensorSpec(shape=(None, None), dtype=tf.float32, name="x")])
def tf_standardize(x: tf.Tensor) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[0], keepdims=True)
    std = tf.sqrt(variance)
    divisor = tf.where(std >= 1e-6, std, tf.constant(1.0, dtype=tf.float32))
    return (x - mean) / divisor
''',
    # long command names, a temporary breakpoint on shifted's own line and a next over it, then where
    "pdb_commands": '''
def pdb_commands() -> str:
    return (
        "tbreak 8\\n"      # a line of the file pdb stands in: shifted = logits - logits.max()
        "continue\\n"
        "next\\n"          # run that line: now shifted exists
        "where\\n"
        "p shifted\\n"
        "continue\\n"
    )
''',
    # torch.autograd.grad instead of .backward(), the full node name ("SqrtBackward0") returned, type hints
    "torch_first_nan_op": '''
def torch_first_nan_op(model_fn, x: torch.Tensor) -> str | None:
    inputs = x.detach().clone().requires_grad_(True)
    node_name = None
    with warnings.catch_warnings(), torch.autograd.detect_anomaly(check_nan=True):
        warnings.simplefilter("ignore")
        outputs = model_fn(inputs)
        try:
            torch.autograd.grad(outputs.mean(), inputs)
        except RuntimeError as error:
            match = re.search(r"Function '(\\w+)' returned nan", str(error))
            node_name = match.group(1) if match else None
    return node_name
''',
    # a compiled regex on str(error), the name lower-cased, numerics switched off in finally
    "tf_first_nan_op": '''
OP_IN_MESSAGE = re.compile(r'op "(?P<op>[A-Za-z0-9_]+)"')


def tf_first_nan_op(model_fn, x: tf.Tensor) -> str | None:
    op_name = None
    tf.debugging.enable_check_numerics()
    try:
        model_fn(x)
    except tf.errors.InvalidArgumentError as error:
        match = OP_IN_MESSAGE.search(str(error))
        op_name = match["op"].lower() if match else None
    finally:
        tf.debugging.disable_check_numerics()
    return op_name
''',
}


def test_wrong_answers_fail_with_messages_that_teach(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG, tmp_path / "wrong.ipynb")
    got = _messages(run_check("03_debugging", notebook=nb, course=course, zygote=zygote))
    assert all(status == "failed" for status, _ in got.values()), got
    assert "nan_to_num" in got["torch_fix"][1] and "max" in got["torch_fix"][1]
    assert "below 1e-6" in got["tf_fix"][1] and "tf.where" in got["tf_fix"][1]
    assert "before shifted was assigned" in got["pdb_shifted"][1]
    assert "returning a fixed name" in got["torch_nan"][1] and "'SqrtBackward0'" in got["torch_nan"][1]
    assert "return only the op's name" in got["tf_nan"][1]
    assert "torch_first_nan_op returned" in got["nan_agree"][1] or "tf_first_nan_op returned" in got["nan_agree"][1]


def test_more_wrong_answers(course, tmp_path, zygote):
    nb = notebook_with(SOLUTION, WRONG_2, tmp_path / "wrong2.ipynb")
    got = _messages(run_check("03_debugging", notebook=nb, course=course, zygote=zygote))
    assert "integer division" in got["torch_fix"][1]
    assert "not a tf.function" in got["tf_fix"][1] and "keep @tf.function" in got["tf_fix"][1]
    assert "never shows the value of shifted" in got["pdb_shifted"][1]
    assert "returned None" in got["torch_nan"][1] and ".backward()" in got["torch_nan"][1]
    assert got["tf_nan"][0] == "passed"
    assert all(got[p][0] == "failed" for p in ("torch_fix", "tf_fix", "pdb_shifted", "torch_nan", "nan_agree"))


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_correct_alternatives_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(SOLUTION, answers, tmp_path / "alt.ipynb")
    got = _messages(run_check("03_debugging", notebook=nb, course=course, zygote=zygote))
    assert all(status == "passed" for status, _ in got.values()), got


class _JudgeOnly:
    """Just enough of the grader's Context to judge pdb sessions in this process. The real check runs the same
    grader function (autograder.worker.m03_debugging.pdb_session) in a fresh worker; here many command strings cost
    one torch import instead of a check each."""

    text, fail = staticmethod(Context.text), staticmethod(Context.fail)

    def __init__(self, commands: str, seed: int):
        self.commands, self.rng, self.details = commands, np.random.default_rng(seed), {}
        self.sessions = 0

    def call(self, fn, args, framework):
        return {"type": "str", "value": self.commands}

    def fresh_worker(self, frameworks, device=None):
        return self

    def close(self):
        pass

    def fresh_call(self, worker, fn, args, framework, doing):
        assert fn == "@pdb_session"
        self.sessions += 1
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            try:
                return _describe(worker_code.pdb_session(None, *args))
            finally:
                os.chdir(cwd)


@pytest.mark.parametrize("commands", [
    "b softmax_rows\nc\nn\nn\np shifted\nc\n",                      # the solution: step with n
    "tbreak softmax_rows\nc\nuntil 9\npp shifted\n",                 # a temporary breakpoint, until, no c at the end
    "b 9\ncont\nw\np shifted\nc\n",                                 # a line of the current file, where
    "n\nn\nn\ns\nunt 9\np shifted.data\n",                          # step over 3 lines, into the call, until
    "b program.py:10\nc\nup\ndown\n\tp   shifted \r\nc\n",          # up and back down, odd whitespace
    "b softmax_rows\nc\nr\np shifted\nc\n",                          # return: stopped at the function's return
])
def test_pdb_alternatives_pass_the_judge(commands):
    assert pdb_shifted(_JudgeOnly(commands, 1)).startswith("stopped in softmax_rows()")


@pytest.mark.parametrize("commands, message", [
    ("p shifted\nc\n", "never stopped inside softmax_rows()"),
    ("b main\nc\nn\nn\nn\np x\nc\n", "never stopped inside softmax_rows()"),
    ("b 8\nc\np shifted\nc\n", "before shifted was assigned"),
    ("b 9\nc\np logits\nc\n", "never shows the value of shifted"),
    ("b 10\nc\np weights\nc\n", "never shows the value of shifted"),
])
def test_pdb_wrong_commands_fail_the_judge(commands, message):
    with pytest.raises(Mismatch, match=re.escape(message)):
        pdb_shifted(_JudgeOnly(commands, 2))


@pytest.mark.parametrize("commands, unlisted", [
    ("b 9\nc\n!print(shifted)\nc\n", "!print(shifted)"),                  # a statement
    ("b 9\nc\np shifted.numpy()\nc\n", "p shifted.numpy()"),              # a call in p
    ("b 9\nc\nshifted\nc\n", "shifted"),                                  # a bare expression runs as a statement
    ("b softmax_rows, x.shape[0] > 0\nc\nn\nn\np shifted\n", "b softmax_rows, x.shape[0] > 0"),  # a condition
    ("b 9\nc\np shifted;;p x\n", "p shifted;;p x"),                        # two commands on a line
    ("b 9\nc\np shifted[0]\n", "p shifted[0]"),                            # an expression, not a name or path
    ("b 9\nc\np shifted\nq\n", "q"),                                      # a command off the list
    ("b 9\nc\ninteract\n", "interact"),
    ("b 9\nc\ndisplay shifted\nc\n", "display shifted"),
])
def test_pdb_commands_off_the_whitelist_fail_before_anything_runs(commands, unlisted):
    judge = _JudgeOnly(commands, 3)
    with pytest.raises(Mismatch) as err:
        pdb_shifted(judge)
    message = str(err.value)
    assert repr(unlisted) in message and "not one of the pdb commands the grader runs" in message, message
    assert "continue/c/cont" in message and "p or pp of a name or an attribute path" in message
    assert "\n" not in message and judge.sessions == 0


def _forged_location(seed: int) -> str:
    """Issue 12's attack: a statement prints a location line inside softmax_rows and the value of shifted,
    computed from the program's own seed, while pdb actually stands in main()."""
    return ("!import torch; torch.manual_seed(SEED); x = torch.randn(4, 3); w = torch.randn(3, 5); "
            "l = x @ w; print('> program.py(9)softmax_rows()'); print('-> weights = ...'); print(l - l.max())\n")


def test_a_statement_printing_a_forged_location_line_fails_and_the_honest_answer_passes():
    forged = _forged_location(1)
    with pytest.raises(Mismatch, match=re.escape("!import torch; torch.manual_seed(SEED);")):
        pdb_shifted(_JudgeOnly(forged, 1))
    # Even had the whitelist let it through, the printed location is not where pdb stood: the judge reads the
    # debugger's record. The session itself shows both: the forged line in the text, main() in the record.
    events = _describe(_session(PDB_PROGRAM.replace("SEED = 0", "SEED = 5"), forged))["items"]
    events = [[leaf["value"] for leaf in e["items"]] for e in events]
    assert "> program.py(9)softmax_rows()" in events[-1][1]
    assert {e[2] for e in events if e[0] in ("stop", "command")} == {"main"}
    assert pdb_shifted(_JudgeOnly("b softmax_rows\nc\nn\nn\np shifted\nc\n", 1)).startswith("stopped in")


def test_a_notebook_forging_the_location_line_scores_0_on_the_part(course, tmp_path, zygote):
    """Issue 12's attack, end to end: before the whitelist, it passed. The solution (the control) passes in
    test_correct_alternatives_pass."""
    forged = {"pdb_commands": f"def pdb_commands():\n    return {_forged_location(0)!r}\n"}
    nb = notebook_with(SOLUTION, forged, tmp_path / "forged.ipynb")
    result = run_check("03_debugging.pdb_shifted", notebook=nb, course=course, zygote=zygote)
    assert result.score == 0 and _messages(result)["pdb_shifted"][0] == "failed", result.summary()
    assert "pdb_commands() holds '!import torch;" in _messages(result)["pdb_shifted"][1]


# A plain Python function with the right values, passed off as a tf.function by patching the harness's record of
# the tf.function class, which the check used to ask the student's own process about. It passed before.
PLAIN_FUNCTION_CALLED_A_GRAPH = """
import sys
frame = sys._getframe()
while frame is not None:  # the harness runs this cell: its globals are up the stack
    if "_TF_FUNCTION" in frame.f_globals:
        frame.f_globals["_TF_FUNCTION"] = (object, lambda fn: 1, None)
    frame = frame.f_back

def tf_standardize(x):
    x = x.numpy().astype("float64")
    centred = x - x.mean(axis=0, keepdims=True)
    std = centred.std(axis=0)
    return tf.constant((centred / np.where(std < 1e-6, 1.0, std)).astype("float32"))
"""


def test_a_plain_function_passed_off_as_a_tf_function_scores_0_on_the_part(course, tmp_path, zygote):
    """The evidence is the graph, saved and run in a fresh verifier; the solution (the control) passes in
    test_correct_alternatives_pass, and an alternative without input_signature there too."""
    nb = notebook_with(SOLUTION, {"tf_standardize": PLAIN_FUNCTION_CALLED_A_GRAPH}, tmp_path / "plain.ipynb")
    result = run_check("03_debugging.tf_fix", notebook=nb, course=course, zygote=zygote)
    status, message = _messages(result)["tf_fix"]
    assert result.score == 0 and status == "failed", result.summary()
    assert "not a tf.function" in message and "keep @tf.function" in message, message


def test_a_call_in_p_fails_and_the_plain_name_passes():
    # p with a call could print anything (here the value with a forged location line in front of it).
    forged = "b 9\nc\np print('> program.py(9)softmax_rows()') or shifted\nc\n"
    with pytest.raises(Mismatch, match="not one of the pdb commands the grader runs"):
        pdb_shifted(_JudgeOnly(forged, 4))
    assert pdb_shifted(_JudgeOnly("b 9\nc\np shifted\nc\n", 4)).startswith("stopped in softmax_rows() at line 9")


def _session(program: str, commands: str) -> list:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            return worker_code.pdb_session(None, program, commands)
        finally:
            os.chdir(cwd)


def test_part_2_says_where_its_bug_hides_and_the_buggy_function_agrees(course):
    """The text said one bug "only shows when n == d"; it is the reverse (issue 14). The claim is now run: the buggy
    function raises for a non-square x and returns a wrong answer for a square one."""
    import json

    import numpy as np
    import tensorflow as tf
    cells = json.loads(course.module("03_debugging").solution.read_text())["cells"]
    text = next("".join(c["source"]) for c in cells if "## Part 2" in "".join(c["source"]))
    assert "hides when `n == d`" in text and "every other shape raises" in text, text
    buggy = next("".join(c["source"]) for c in cells if "def tf_standardize_buggy" in "".join(c["source"]))
    # The second bug (a Python `if` on a tensor of std values) is fixed here, to isolate the one the text means.
    scope = {"tf": tf}
    exec(buggy.replace("    if std < 1e-6:\n        std = tf.ones_like(std)\n", ""), scope)
    with pytest.raises(Exception, match="Incompatible shapes|required broadcastable shapes"):
        scope["tf_standardize_buggy"](tf.constant(np.ones((5, 3), np.float32)))
    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    got = scope["tf_standardize_buggy"](tf.constant(x)).numpy()
    want = (x - x.mean(0)) / x.std(0)
    assert got.shape == (4, 4) and not np.allclose(got, want, atol=1e-3)
