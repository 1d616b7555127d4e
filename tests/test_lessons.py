"""Lessons: each module's PyTorch and TensorFlow notebooks mirror each other and run clean, headless."""
import json
import re

import pytest
from lesson_runs import CLAIM, HEADLESS_GROUPS, headless_test_for

from conftest import ROOT


def headings(path):
    nb = json.loads(path.read_text())
    return [line.strip() for c in nb["cells"] if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("## ")]


def modules():
    from autograder import load_course
    return load_course(ROOT).modules


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_twin_lessons_have_the_same_sections_in_the_same_order(module):
    torch_h, tf_h = headings(module.lessons["torch"]), headings(module.lessons["tensorflow"])
    assert len(torch_h) >= 3, "a lesson has sections"
    assert torch_h == tf_h


def lesson_paths():
    return [p for m in modules() for p in m.lessons.values()]


def sections(path):
    """[(heading, [code cell sources])] for each `## ` section of a lesson."""
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.lstrip().startswith("## "):
            found.append((source.lstrip().splitlines()[0], []))
        elif cell["cell_type"] == "code" and found:
            found[-1][1].append(source)
    return found


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda p: p.stem)
def test_every_section_states_what_it_demonstrates_as_a_checked_claim(path):
    """Issue 14: a demonstration that silently shows nothing fails CI. Each section that runs code makes at least one
    claim the headless run checks, and every cell that catches an exception claims what the catch shows, so an
    `except` that is never reached (06 TF §2's float(t)) cannot pass for a demonstration."""
    silent = [heading for heading, codes in sections(path) if codes and not any(CLAIM.search(c) for c in codes)]
    assert not silent, f"{path.name}: sections with code and no shows()/shows_raise() claim: {silent}"
    catching = [i for i, (_, codes) in enumerate(sections(path), 1) for c in codes
                if re.search(r"^\s*except\b", c, re.M) and not CLAIM.search(c)]
    assert not catching, f"{path.name}: sections {catching} catch an exception in a cell that claims nothing"


test_lessons_run_headless_without_errors_or_stderr_and_twins_agree = headless_test_for("first")


def test_every_lesson_pair_runs_headless_in_one_of_the_test_files():
    """The headless runs are spread over three files (pytest-xdist's loadfile keeps a file on one worker, and all
    nine pairs on one worker took 9 minutes of CI's 19); a module left out of every group would never run."""
    grouped = [m for ids in HEADLESS_GROUPS.values() for m in ids]
    assert sorted(grouped) == sorted(m.id for m in modules()) and len(grouped) == len(set(grouped))


# The demonstrations issue 14 found showing nothing or the wrong thing, each now a claim the lesson checks.
CLAIMS = {
    ("06_compilers", "tensorflow"): [".numpy() on a tensor raises while tracing",
                                     "AutoGraph turns float(tensor) into a cast to float32"],
    ("07_performance", "tensorflow"): ["without optimizer.scale_loss a LossScaleOptimizer step moves the weights"],
}


@pytest.mark.parametrize("where", CLAIMS, ids=lambda w: f"{w[0]}-{w[1]}")
def test_the_repaired_demonstrations_state_their_claims(where):
    from autograder import load_course
    module = load_course(ROOT).module(where[0])
    code = "".join("".join(c["source"]) for c in json.loads(module.lessons[where[1]].read_text())["cells"]
                   if c["cell_type"] == "code")
    for claim in CLAIMS[where]:
        assert f'shows("{claim}' in code or f'shows(f"{claim}' in code, claim


def test_a_claim_that_does_not_hold_stops_the_lesson(capsys):
    from autograder.explorers import NotShown, shows
    shows("one is one", 1 == 1)
    assert capsys.readouterr().out == "✓ one is one\n"
    with pytest.raises(NotShown, match="should show that two is one"):
        shows("two is one", 2 == 1)

