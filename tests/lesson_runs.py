"""Running a module's two lessons headless and checking what they showed, shared by the three files that do it."""
import re

import nbformat

from headless import run_notebook

# A demonstrated claim: autograder.explorers.shows(claim, holds) or shows_raise(claim, ErrorType, fn, ...).
CLAIM = re.compile(r"\bshows(?:_raise)?\(")

# Which file runs which module's lessons: test_lessons.py ("first"), test_lessons_later.py, test_lessons_capstone.py.
# pytest-xdist's loadfile keeps each file on one worker, so the groups are balanced by their headless run times.
HEADLESS_GROUPS = {
    "first": ("01_tensors", "02_models", "03_debugging", "04_tf_function"),
    "later": ("05_torchscript", "06_compilers", "07_performance", "08_quantization"),
    "capstone": ("09_capstone",),
}


def stderr_and_errors(nb):
    return [(i, o.get("text", o.get("evalue", ""))[:300]) for i, c in enumerate(nb.cells, 1)
            for o in c.get("outputs", []) if o.output_type == "error" or o.get("name") == "stderr"]


def check_lesson_pair(module) -> None:
    """Both lessons run headless without errors or stderr, every claim printed its check mark, and 01's two
    training loops reach the same weights."""
    outputs = {}
    for framework, path in module.lessons.items():
        nb = run_notebook(nbformat.read(path, as_version=4), path.parent)
        assert not stderr_and_errors(nb), f"{path.name}: {stderr_and_errors(nb)}"
        outputs[framework] = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        # Every demonstrated claim (autograder.explorers.shows) printed its check mark: none was skipped.
        claims = sum(len(CLAIM.findall("".join(c.source))) for c in nb.cells if c.cell_type == "code")
        shown = outputs[framework].count("✓ ")
        assert shown >= claims, f"{path.name}: {claims} claims, {shown} shown"
    if module.id == "01_tensors":  # the two training loops reach the same weights from the same start
        weights = {fw: re.search(r"final weights: \[(.*?)\]", text).group(1).split() for fw, text in outputs.items()}
        diff = max(abs(float(a) - float(b)) for a, b in zip(weights["torch"], weights["tensorflow"]))
        assert diff <= 1e-5, weights


def headless_test_for(group: str):
    """The headless test of one group's modules, for a test file to bind at module level."""
    import pytest

    from autograder import load_course

    from conftest import ROOT
    modules = [m for m in load_course(ROOT).modules if m.id in HEADLESS_GROUPS[group]]

    @pytest.mark.slow
    @pytest.mark.parametrize("module", modules, ids=lambda m: m.id)
    def test_lessons_run_headless_without_errors_or_stderr_and_twins_agree(module):
        check_lesson_pair(module)
    return test_lessons_run_headless_without_errors_or_stderr_and_twins_agree
