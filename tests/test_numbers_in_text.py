"""Issue 14: every threshold or tolerance quoted in an exercise, a lesson or a hint is the grader's own number.

A quoted number here is a ratio (`1.3×`), a percentage (`93 %`) or a number in scientific notation (`1e-4`): the forms
thresholds and tolerances take. Each must be a constant the module's grader uses (its spec and worker modules, its
course.toml entry, the registry's defaults), or a fact listed below and recomputed here. A dimension (`8×8`) is not a
ratio. Before this test, 08's text said 95 %, 0.25 and 0.75 while its grader used 93 %, 0.35 and 1.2.
"""
import ast
import json
import math
import re

import pytest

from autograder._registry import tomllib

from conftest import ROOT

QUOTED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:e-?\d+)?)\s*(×(?!\s*\d)|%|x(?=\W))|(?<![\w.])(\d(?:\.\d+)?e-\d+)")


def keras_adam_epsilon():
    import inspect

    import keras
    return inspect.signature(keras.optimizers.Adam).parameters["epsilon"].default


def torch_adam_eps():
    import inspect

    import torch
    return inspect.signature(torch.optim.Adam).parameters["eps"].default


def grader_records(module_id, figure):
    """A measurement the grader's module records in its own docstring, e.g. 08's worst agreement over 150 seeds."""
    source = next((ROOT / "autograder" / "exercises").glob(f"m{module_id[:2]}_*.py")).read_text()
    return figure in ast.get_docstring(ast.parse(source))


# Quoted numbers that are facts, not thresholds, each with how it is recomputed.
FACTS = {
    ("07_performance", "0.4 %"): lambda: round(100 * 2 ** -8, 1) == 0.4,  # bfloat16's 8 significant bits
    ("08_quantization", "96.0 %"): lambda: grader_records("08_quantization", "96.0 %"),
    ("08_quantization", "4x"): lambda: 4 == 32 // 8,  # float32 to int8 weights
}
# Facts any module may quote: the two frameworks' Adam epsilons.
FACTS_ANYWHERE = {"1e-7": lambda: keras_adam_epsilon() == 1e-7, "1e-8": lambda: torch_adam_eps() == 1e-8}
IDENTITIES = {1.0, 100.0}  # "1×" (no speed-up) and "100 %" (all) are not thresholds


def numeric_constants(tree) -> set[float]:
    return {float(n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)}


def toml_numbers(value, out: set[float]) -> set[float]:
    if isinstance(value, dict):
        for v in value.values():
            toml_numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            toml_numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.add(float(value))
    return out


def grader_constants(module) -> set[float]:
    from autograder._registry import Part
    found = {float(v) for v in (Part.__dataclass_fields__["rtol"].default, Part.__dataclass_fields__["atol"].default)}
    for folder in ("exercises", "worker"):
        for path in (ROOT / "autograder" / folder).glob(f"m{module.id[:2]}_*.py"):
            found |= numeric_constants(ast.parse(path.read_text()))
    raw = tomllib.loads((ROOT / "course.toml").read_text())
    entry = next(m for m in raw["module"] if m["id"] == module.id)
    return found | toml_numbers(entry, set()) | toml_numbers(raw.get("limits", {}), set())


def quoted_texts(module):
    """(where, text) for the exercise's markdown, its parts' hints and concepts, and both lessons' markdown."""
    nb = json.loads(module.solution.read_text())
    texts = [(f"{module.solution.name}, cell {i}", "".join(c["source"]))
             for i, c in enumerate(nb["cells"], 1) if c["cell_type"] == "markdown"]
    for part in module.exercise.parts:
        texts += [(f"course.toml part {part.id} hint", part.hint),
                  (f"course.toml part {part.id} concept", part.concept)]
        texts += [(f"course.toml part {part.id} hint for {k}", v) for k, v in part.hints.items()]
    for path in module.lessons.values():
        nb = json.loads(path.read_text())
        texts += [(f"{path.name}, cell {i}", "".join(c["source"]))
                  for i, c in enumerate(nb["cells"], 1) if c["cell_type"] == "markdown"]
    return texts


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_every_quoted_threshold_is_the_graders_constant_or_a_recomputed_fact(module):
    constants = grader_constants(module)
    wrong = []
    for where, text in quoted_texts(module):
        for m in QUOTED.finditer(text or ""):
            number, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), "")
            value = float(number)
            fact = (module.id, f"{number} %" if unit == "%" else f"{number}{unit}")
            check = FACTS.get(fact) or FACTS_ANYWHERE.get(fact[1])
            if check is not None:
                assert check(), f"{where}: the fact {fact[1]} no longer holds"
                continue
            if value in IDENTITIES or any(math.isclose(value, c, rel_tol=1e-9) for c in constants):
                continue
            if unit == "%" and any(math.isclose(value / 100, c, rel_tol=1e-9) for c in constants):
                continue
            wrong.append(f"{where}: {m.group(0).strip()!r} in “…{text[max(0, m.start() - 60):m.end() + 20]}…”")
    assert not wrong, "numbers quoted that the grader does not use:\n" + "\n".join(wrong)


def test_the_check_catches_a_number_the_grader_does_not_use():
    """The test above would have caught 08's 95 %: 0.95 is none of 08's constants."""
    module = next(m for m in modules() if m.id == "08_quantization")
    assert not any(math.isclose(0.95, c) for c in grader_constants(module))
    assert any(math.isclose(0.93, c) for c in grader_constants(module))
    assert QUOTED.search("at least 95 % of the digits").group(1) == "95"
    assert QUOTED.search("flattened 8×8 digits") is None
