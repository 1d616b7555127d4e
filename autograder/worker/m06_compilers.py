"""Module 06's grader code in the workers.

In the student's worker: the student's `fixed`, the grader's stream model and the grader's gate go through
torch.export (the grader's own call for `fixed`, the student's export_for_stream and export_gate for the others), and
each program is saved into the scratch folder; its bytes go back to the parent. What is read there (explain, a
fullgraph compile, torch.export.load) only words a failure, never a pass.
In a fresh verifier that runs no notebook code: those bytes are checked, loaded with torch.export.load, inspected
and run on the parent's inputs (load_program, program_ops, run_program).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile

from autograder.worker import _files, _gated

_programs: dict = {}   # the exported program this worker holds: the student's gate (cond_agree), or a verifier's


def _first_lines(exc: BaseException, n: int = 2, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' / '.join(lines[:n])[:limit]}"


def _as_module(fn):
    """An nn.Module whose forward is fn(x): what torch.export.export takes."""
    import torch

    class AsModule(torch.nn.Module):
        def forward(self, x):
            return fn(x)
    return AsModule()


# -- no_breaks, in the student's worker ------------------------------------------------------------------------
def export_fixed(student, x):
    """The student's `fixed` exported by the grader (torch.export.export, both dimensions dynamic): the saved
    program's bytes. Export fails on a Python `if` on a tensor or a NumPy round trip; a `.item()` stays in the program
    as an operator, which the verifier finds.
    Instead of bytes, a list says why for the failure message (never for a pass): ["breaks", graph_count,
    break_count, reason, ...] when torch._dynamo.explain counts a graph break (`.item()` included);
    ["unsupported", reason] when torch.compile(fullgraph=True) stops at a break explain does not count (a `print`
    before the first tensor op); ["noexport", error] when torch.export fails."""
    import torch
    import torch._dynamo as dynamo
    fixed = student.fixed
    x = x.detach().cpu()
    fixed(x)  # the student's own errors first, told as theirs
    dynamo.reset()
    explained = dynamo.explain(fixed)(x)
    if explained.graph_break_count or explained.graph_count != 1:
        reasons = [str(getattr(r, "reason", r)).strip().splitlines()[0][:120] for r in explained.break_reasons]
        return ["breaks", explained.graph_count, explained.graph_break_count, *reasons]
    dynamo.reset()
    try:
        torch.compile(fixed, fullgraph=True, backend="eager")(x)
    except dynamo.exc.Unsupported as e:
        return ["unsupported", _first_lines(e).split(": ", 1)[1]]
    dims = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    try:
        program = torch.export.export(_as_module(fixed), (x,), dynamic_shapes=(dims,))
    except Exception as e:  # any failure to export is the answer's; its words go into the message
        return ["noexport", _first_lines(e)]
    path = _gated.scratch_path("m06_fixed", ".pt2")
    torch.export.save(program, path)
    return _gated.read_bytes(path)


# -- few_recompiles, in the student's worker -------------------------------------------------------------------
def stream_class():
    """The grader's stream model, tanh(x @ w).mean(dim=1), defined on first use (torch is imported here) and
    registered as this module's `Stream`, so that a student's torch.save of it pickles (and then fails to load as a
    program, which is the lesson) instead of failing on a class pickle cannot find."""
    if "Stream" not in globals():
        import torch

        class Stream(torch.nn.Module):
            def __init__(self, w):
                super().__init__()
                self.register_buffer("w", w)

            def forward(self, x):
                return torch.tanh(x @ self.w).mean(dim=1)

        Stream.__qualname__ = "Stream"
        globals()["Stream"] = Stream
    return globals()["Stream"]


def export_stream(student, w, example):
    """The student's export_for_stream on the grader's stream model and the stream's first input: the bytes of the
    program it saved, or "nofile PATH"."""
    path = _gated.scratch_path("m06_stream", ".pt2")
    model = stream_class()(w.detach().cpu().clone()).eval()
    student.export_for_stream(model, example.detach().cpu().clone(), path)
    unusable = _files.status(path, "zip")
    if unusable:
        return unusable
    return _gated.read_bytes(path)


# -- export_cond and cond_agree, in the student's worker -------------------------------------------------------
def export_gate(student, *args):
    """The student's export_gate on the grader's gate with these weights: the bytes of the program it saved. It is
    also loaded here, for run_exported (cond_agree judges its outputs, not its make-up). A str says why there are no
    bytes: "nofile PATH" or "noload ERROR"."""
    import torch
    _programs.pop("gate", None)
    *weights, example = args
    path = _gated.scratch_path("m06_gate", ".pt2")
    student.export_gate(_gated.model(weights), example.detach().cpu().clone(), path)
    unusable = _files.status(path, "zip")
    if unusable:
        return unusable
    try:
        _programs["gate"] = torch.export.load(path).module()
    except Exception as e:  # what the student saved is not a program: say what torch says
        return f"noload {_first_lines(e, 1, 200)}"
    return _gated.read_bytes(path)


def run_exported(student, x):
    import torch
    with torch.no_grad():  # the program holds CPU weights; its answer goes back to the device the input came on
        return _programs["gate"](x.cpu()).to(x.device)


# -- xla_equal, in the student's worker ------------------------------------------------------------------------
def xla_info(student, x, gamma, beta):
    """Is xla_norm_gelu a tf.function marked for XLA? Read from TensorFlow's own objects: "plain TYPE", "nojit",
    "nohlo ERROR", or "ok FUSIONS" (the fusions in its optimised HLO)."""
    import tensorflow as tf
    fn = student.xla_norm_gelu
    if not isinstance(fn, type(tf.function(lambda: 0))):
        return "plain " + type(fn).__name__
    concrete = fn.get_concrete_function(x, gamma, beta)
    attr = concrete.function_def.attr
    if "_XlaMustCompile" not in attr or not attr["_XlaMustCompile"].b:
        return "nojit"
    try:
        hlo = fn.experimental_get_compiler_ir(x, gamma, beta)(stage="optimized_hlo")
    except Exception as e:  # XLA's refusal, in its own words
        return "nohlo " + _first_lines(e, 1, 200)
    return f"ok {hlo.count(' fusion(')}"


# -- in a fresh verifier: no notebook code ran here ------------------------------------------------------------
# A .pt2 file is more than a graph: torch.export.load unpickles parts of it (falling back to full pickle when the
# safe unpickler refuses), passes the shape expressions of model.json to sympy.sympify (Python's eval), and loads any
# AOTInductor library it holds. Any of these would let a crafted file run code in the verifier and answer for it.
# So the file may hold only the parts torch.export.save writes, every shape expression must be plain arithmetic on
# size symbols, and every unpickling is forced to the safe (weights-only) unpickler.
_ARCHIVE_PARTS = ("archive_format", "archive_version", "byteorder", ".data/", "models/", "data/weights/",
                  "data/constants/", "data/sample_inputs/", "extra/")
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt",
    "Ge", "And", "Or", "Not", "True", "False", "oo", "zoo", "nan", "positive", "negative", "nonnegative", "nonpositive",
    "integer", "real", "finite", "infinite", "zero", "nonzero", "even", "odd", "commutative",
    # torch.utils._sympy.functions, as torch's deserializer names them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity"}
_EXPRESSION_TOKEN = re.compile(r"\s*(?:'([a-z]+[0-9]+)'|([A-Za-z_][A-Za-z0-9_]*)|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
                               r"|\*\*|//|[-+*/%(),=<>!&|~])")


def _plain_expression(text: str) -> bool:
    """Only arithmetic on size symbols (s0, u1 or 's77' as Symbol's name) and the sympy names torch writes: no
    attribute, subscript, string or call of anything else reaches eval."""
    position = 0
    while position < len(text):
        token = _EXPRESSION_TOKEN.match(text, position)
        if token is None or token.end() == position:
            return text[position:].strip() == ""
        name = token.group(2)
        if name is not None and name not in _SYMPY_NAMES and not re.fullmatch(r"[a-z]+[0-9]+", name):
            return False
        position = token.end()
    return True


def _expressions(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str":
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)


def _checked_archive(path: str) -> None:
    """Refuse a file that holds anything but an exported program's parts and plain shape expressions."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            inner = name.split("/", 1)[1] if "/" in name else name
            if inner == "data.pkl":
                raise ValueError("the file is a torch.save pickle, not a program: save the ExportedProgram with "
                                 "torch.export.save")
            if not inner.startswith(_ARCHIVE_PARTS):
                raise ValueError(f"the file holds {name!r}, which torch.export.save does not write")
            if inner.startswith("models/") and inner.endswith(".json"):
                for expression in _expressions(json.loads(archive.read(name))):
                    if not isinstance(expression, str) or not _plain_expression(expression):
                        raise ValueError(f"the file holds a shape expression that is not arithmetic on sizes: "
                                         f"{str(expression)[:80]!r}")


def prepare_verifier(student):
    """Import torch.export's loader (seconds, the first time in a process) while the student's worker exports."""
    import torch._export.serde.serialize  # noqa: F401
    return "ok"


def load_program(student, data):
    """Load the exported program's bytes: [user inputs, user outputs, then each size of its first input: -1 where
    the dimension is dynamic]."""
    import torch
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # read at every torch.load: no pickle may run code here
    path = _gated.write_bytes(data, _gated.scratch_path("m06_from_student", ".pt2"))
    _checked_archive(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.load(path)
        except pickle.UnpicklingError as e:
            lines = [line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line] or [""]
            raise ValueError(f"the file holds a pickle of more than tensors, which only the unsafe unpickler loads "
                             f"({lines[0][:160]})") from None
    _programs["verified"] = (program, program.module())
    signature = program.graph_signature
    inputs = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    first = inputs.get(signature.user_inputs[0]) if signature.user_inputs else None
    shape = getattr(first.meta.get("val"), "shape", ()) if first is not None else ()
    sizes = [-1 if isinstance(size, torch.SymInt) else int(size) for size in shape]
    return [len(signature.user_inputs), len(signature.user_outputs), *sizes]


def program_ops(student):
    """The operators the loaded program calls, its subgraphs (torch.cond's branches) included, one string."""
    program, _ = _programs["verified"]
    ops = []
    for module in program.graph_module.modules():
        if hasattr(module, "graph"):
            ops += [str(node.target) for node in module.graph.nodes if node.op == "call_function"]
    return " ".join(ops)


def run_program(student, x):
    import torch
    with torch.no_grad():  # run where it was saved (CPU); answer on the device the input came on
        return _programs["verified"][1](x.cpu()).to(x.device)
