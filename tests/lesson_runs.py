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
    """Both lessons run headless without errors or stderr, every claim printed its check mark, 01's two training
    loops reach the same weights, and 09's second twin reuses the first one's showdown."""
    outputs = {framework: _run_lesson(path) for framework, path in module.lessons.items()}
    if module.id == "09_capstone":  # the twins ask for the same showdown: the second reads the first's back
        first, second = outputs.values()
        assert "measured now" in first and "reused: measured at" in second, "the second twin measured again"
    if module.id == "01_tensors":  # the two training loops reach the same weights from the same start
        weights = {fw: re.search(r"final weights: \[(.*?)\]", text).group(1).split() for fw, text in outputs.items()}
        diff = max(abs(float(a) - float(b)) for a, b in zip(weights["torch"], weights["tensorflow"]))
        assert diff <= 1e-5, weights


def _run_lesson(path) -> str:
    """One lesson, headless: no error or stderr, and a check mark for every claim. Returns what it printed."""
    nb = run_notebook(nbformat.read(path, as_version=4), path.parent)
    assert not stderr_and_errors(nb), f"{path.name}: {stderr_and_errors(nb)}"
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    # Every demonstrated claim (autograder.explorers.shows) printed its check mark: none was skipped.
    claims = sum(len(CLAIM.findall("".join(c.source))) for c in nb.cells if c.cell_type == "code")
    shown = printed.count("✓ ")
    assert shown >= claims, f"{path.name}: {claims} claims, {shown} shown"
    return printed


def headless_test_for(group: str):
    """The headless test of one group's modules, for a test file to bind at module level."""
    import pytest

    from autograder import load_course

    from conftest import ROOT
    modules = [m for m in load_course(ROOT).modules if m.id in HEADLESS_GROUPS[group]]

    @pytest.mark.slow
    @pytest.mark.parametrize("module", modules, ids=lambda m: m.id)
    def test_lessons_run_headless_without_errors_or_stderr_and_twins_agree(module, tmp_path, monkeypatch):
        # A showdown cache of the test's own: no earlier run's result spares 09's first twin the measuring.
        monkeypatch.setenv("CLASH_SHOWDOWN_CACHE", str(tmp_path))
        check_lesson_pair(module)
    return test_lessons_run_headless_without_errors_or_stderr_and_twins_agree
