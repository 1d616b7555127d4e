"""Modules 05 and 06: the verdicts rest on artefacts a fresh verifier loads, never on what the student's process
reports (issue 12). Each forgery scores 0 on the part it attacks; the honest solution, checked the same way, passes.

The forgeries: an eager nn.Module passed off as a ScriptModule (05 scripted); `tangled`, with its three graph breaks,
reported as one graph (06 no_breaks); a program frozen to one shape passed off as serving the stream (06
few_recompiles); and a crafted .pt2 file that would run code in the verifier as it loads, to answer for the program.
"""
import io
import zipfile

import pytest

from autograder import run_check

from conftest import ROOT, notebook_with

pytestmark = pytest.mark.slow


def _part(course, zygote, tmp_path, mid: str, part: str, replacements: dict):
    solution = ROOT / "solutions" / mid / f"{mid}.ipynb"
    nb = notebook_with(solution, replacements, tmp_path / f"{part}.ipynb")
    return run_check(f"{mid}.{part}", notebook=nb, course=course, zygote=zygote, framework="torch").parts[0]


def _zero(part) -> None:
    assert not part.passed and part.points == 0, part.message


# -- 05 scripted ------------------------------------------------------------------------------------------------
# A ScriptModule by type only: its forward is Python, run eagerly, so in the student's process it is right on both
# branches and passes isinstance(..., torch.jit.ScriptModule); the harness's old introspection is patched too.
SCRIPT_MODULE_BY_TYPE = '''
import autograder._harness as _harness

_harness._script_nodes = lambda fn: ["prim::If", "aten::linear", "aten::tanh"]


class Eager(torch.jit.ScriptModule):
    def __init__(self, model):
        super().__init__()
        self.__dict__["eager"] = model  # out of TorchScript's reach (an attribute would be scripted)

    def forward(self, x):
        return self.__dict__["eager"](x)
'''

SCRIPTED_FORGERIES = {
    # saved as it is: the archive holds no forward
    "by type only": SCRIPT_MODULE_BY_TYPE + "\n\ndef script_model(model):\n    return Eager(model)\n",
    # its save writes a trace, a real TorchScript archive whose branch is frozen
    "by type only, saving a trace": SCRIPT_MODULE_BY_TYPE + '''
    def save(self, path, **kwargs):
        torch.jit.trace(self.__dict__["eager"], torch.ones(2, 4)).save(path)


def script_model(model):
    return Eager(model)
''',
    # its save pickles the eager model
    "by type only, saving a pickle": SCRIPT_MODULE_BY_TYPE + '''
    def save(self, path, **kwargs):
        torch.save(self.__dict__["eager"], path)


def script_model(model):
    return Eager(model)
''',
}


@pytest.mark.parametrize("attack", sorted(SCRIPTED_FORGERIES))
def test_an_eager_module_passed_off_as_scripted_scores_zero(course, tmp_path, zygote, attack):
    part = _part(course, zygote, tmp_path, "05_torchscript", "scripted", {"script_model": SCRIPTED_FORGERIES[attack]})
    _zero(part)


def test_a_scripted_module_without_the_if_fails_and_says_so(course, tmp_path, zygote):
    """Right values, but computed with torch.where: the archive's graph holds no prim::If, the `if` the part is
    about."""
    where = '''
class Heads(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.hidden, self.up, self.down = model.hidden, model.up, model.down

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return torch.where(x.sum() > 0, self.up(h), self.down(h))


def script_model(model):
    return torch.jit.script(Heads(model))
'''
    part = _part(course, zygote, tmp_path, "05_torchscript", "scripted", {"script_model": where})
    _zero(part)
    assert "no prim::If" in part.message, part.message


def test_the_scripted_solution_passes_from_its_archive(course, tmp_path, zygote):
    part = _part(course, zygote, tmp_path, "05_torchscript", "scripted", {})
    assert part.passed, part.message
    assert "prim::If" in part.message and "fresh process" in part.message


# -- 06: a crafted .pt2, whose loading would run code in the verifier --------------------------------------------
# torch.export.load falls back to a full unpickler for the example inputs; this file's would replace the verifier's
# run_program with `PROGRAM` (a function of x that computes the right answer in Python). The verifier refuses it.
CRAFTED_FILE = '''
import io as _io
import zipfile as _zipfile

_real_export, _real_save = torch.export.export, torch.export.save


class _Payload:
    """Unpickled, it runs `source` and then returns the program's true example inputs, so that loading goes on."""
    def __init__(self, source, inputs):
        self.source, self.inputs = source, inputs

    def __reduce__(self):
        patch = ("import torch\\nimport autograder.worker.m06_compilers as m\\n" + self.source +
                 "\\nm.run_program = lambda student, x: PROGRAM(x)\\n")
        inputs = f"__import__('torch').load(__import__('io').BytesIO({self.inputs!r}), weights_only=True)"
        return (eval, (f"exec({patch!r}, {{}}) or {inputs}",))


def save_crafted(program, path, source):
    """program, saved; its example inputs replaced by a pickle that runs `source` where it is loaded."""
    plain, crafted = _io.BytesIO(), _io.BytesIO()
    _real_save(program, plain)
    original = _zipfile.ZipFile(_io.BytesIO(plain.getvalue()))
    with _zipfile.ZipFile(crafted, "w") as out:
        for name in original.namelist():
            data = original.read(name)
            if name.endswith("sample_inputs/model.pt"):
                payload = _io.BytesIO()
                torch.save(_Payload(source, data), payload)
                data = payload.getvalue()
            out.writestr(name, data)
    with open(path, "wb") as f:
        f.write(crafted.getvalue())
'''

# Every view the student's process has of `fixed`'s graphs says "one graph, no break".
FORGED_COUNTERS = '''
import torch._dynamo as _dynamo
import autograder._harness as _harness


class _OneGraph:
    graph_count, graph_break_count, break_reasons = 1, 0, []


_dynamo.explain = lambda fn, *args, **kwargs: (lambda *a, **k: _OneGraph())
_harness._graph_breaks = lambda fn, args: {"graph_count": 1, "graph_break_count": 0, "reasons": []}
torch.compile = lambda fn=None, **kwargs: fn
'''

TANGLED_IN_TORCH = '''
def PROGRAM(x):
    y = x / x.abs().max()
    norm = torch.linalg.vector_norm(y)
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)
'''

NO_BREAKS_FORGERIES = {
    # tangled itself, three graph breaks, reported as one graph
    "tangled, counters forged": FORGED_COUNTERS + "\n\ndef fixed(x):\n    return tangled(x)\n",
    # one `.item()` left in, reported as one graph: the exported program holds the item
    ".item(), counters forged": FORGED_COUNTERS + '''

def fixed(x):
    y = x / x.abs().max().item()
    norm = torch.linalg.vector_norm(y)
    return torch.where(y.sum() > 0, y * norm, torch.tanh(y) - norm)
''',
    # tangled, counters forged, and a crafted file: an identity program whose loading would install the answer
    "tangled, crafted file": FORGED_COUNTERS + CRAFTED_FILE + f'''

class _Identity(nn.Module):
    def forward(self, x):
        return x * 1.0


torch.export.export = lambda module, args, **kwargs: _real_export(_Identity(), args, **kwargs)
torch.export.save = lambda program, path, **kwargs: save_crafted(program, path, {TANGLED_IN_TORCH!r})


def fixed(x):
    return tangled(x)
''',
}


@pytest.mark.parametrize("attack", sorted(NO_BREAKS_FORGERIES))
def test_graph_breaks_reported_as_one_graph_score_zero(course, tmp_path, zygote, attack):
    part = _part(course, zygote, tmp_path, "06_compilers", "no_breaks", {"fixed": NO_BREAKS_FORGERIES[attack]})
    _zero(part)
    if attack.startswith(".item()"):
        assert "Python number" in part.message and "keep it a tensor" in part.message, part.message


def test_the_fixed_solution_passes_from_its_exported_program(course, tmp_path, zygote):
    part = _part(course, zygote, tmp_path, "06_compilers", "no_breaks", {})
    assert part.passed, part.message
    assert "torch.export captured fixed whole" in part.message


STREAM_FORGERIES = {
    # a program frozen to the example's shape; in the student's process torch.export.load hands back the eager model
    "static, loader patched": '''
def export_for_stream(model, example, path):
    torch.export.save(torch.export.export(model, (example,)), path)
    torch.export.load = lambda *args, **kwargs: type("Loaded", (), {"module": lambda self: model})()
''',
    # the eager model pickled, not a program
    "pickled model": '''
def export_for_stream(model, example, path):
    torch.save(model, path)
''',
    # a program frozen to the example's shape, in a crafted file whose loading would install the eager model
    "static, crafted file": CRAFTED_FILE + '''

def export_for_stream(model, example, path):
    w = model.w.tolist()
    source = f"import torch\\nW = torch.tensor({w!r})\\ndef PROGRAM(x):\\n    return torch.tanh(x @ W).mean(dim=1)\\n"
    save_crafted(torch.export.export(model, (example,)), path, source)
''',
}


@pytest.mark.parametrize("attack", sorted(STREAM_FORGERIES))
def test_a_program_that_does_not_serve_the_stream_scores_zero(course, tmp_path, zygote, attack):
    part = _part(course, zygote, tmp_path, "06_compilers", "few_recompiles",
                 {"export_for_stream": STREAM_FORGERIES[attack]})
    _zero(part)


def test_the_stream_solution_passes_from_its_exported_program(course, tmp_path, zygote):
    part = _part(course, zygote, tmp_path, "06_compilers", "few_recompiles", {})
    assert part.passed, part.message


def test_a_crafted_gate_program_scores_zero(course, tmp_path, zygote):
    """export_cond: the model exported with its Python `if` frozen to the example's branch, in a crafted file whose
    loading would install the eager gate in the verifier."""
    crafted = CRAFTED_FILE + '''

def export_gate(model, example, path):
    weights = {k: v.tolist() for k, v in model.state_dict().items()}
    source = (f"W = {{k: torch.tensor(v) for k, v in {weights!r}.items()}}\\n"
              "def PROGRAM(x):\\n"
              "    h = torch.tanh(x @ W['hidden.weight'].T + W['hidden.bias'])\\n"
              "    head = 'up' if x.sum() > 0 else 'down'\\n"
              "    return h @ W[head + '.weight'].T + W[head + '.bias']\\n")

    class Frozen(nn.Module):  # the branch of a positive example, frozen
        def forward(self, x):
            return model.up(torch.tanh(model.hidden(x)))

    program = torch.export.export(Frozen(), (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    save_crafted(program, path, source)
'''
    part = _part(course, zygote, tmp_path, "06_compilers", "export_cond", {"export_gate": crafted})
    _zero(part)


# -- the verifier's checks of a .pt2 file, on their own (no worker) ----------------------------------------------
def test_only_plain_shape_expressions_reach_sympify():
    from autograder.worker.m06_compilers import _plain_expression
    for plain in ("Symbol('s77', positive=True, integer=True)", "s0 + 1", "FloorDiv(s0, 2)", "Eq(s0, 3)",
                  "Max(2, s1)*s0 - 1", "u0 >= 0", "(s0 > 2) & (s1 <= 32)", "2.5e-3*s0"):
        assert _plain_expression(plain), plain
    for crafted in ("print(1234567)", "exec(chr(112))", "__import__('os').system('true')", "Symbol('s0').func",
                    "getattr(s0, chr(95))", "Symbol('a'+'b')", "[s0 for s0 in ()]", "lambda: 0", "s0; 1",
                    "Symbol(\"s0\")"):
        assert not _plain_expression(crafted), crafted


def _archive(names: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in names.items():
            z.writestr(name, data)
    return out.getvalue()


def test_a_pt2_file_with_anything_but_a_program_is_refused(tmp_path):
    from autograder.worker.m06_compilers import _checked_archive
    ok = {"m/archive_format": "pt2", "m/models/model.json": '{"a": {"expr_str": "s0 + 1"}}', "m/byteorder": "little"}
    cases = {
        "an AOTInductor library": {**ok, "m/data/aotinductor/model/model.so": b"\x7fELF"},
        "a shape expression that calls": {**ok, "m/models/model.json": '{"a": [{"expr_str": "print(1)"}]}'},
    }
    path = tmp_path / "ok.pt2"
    path.write_bytes(_archive(ok))
    _checked_archive(str(path))
    for names in cases.values():
        path = tmp_path / "crafted.pt2"
        path.write_bytes(_archive(names))
        with pytest.raises(ValueError):
            _checked_archive(str(path))
