"""Numbers a student reads come from the grader's own settings (issue 13): every exercise states its limits in a
cell generated from course.toml (autograder/_stated.py), and a stale cell fails here."""
import dataclasses
import json

import pytest

from autograder import load_course
from autograder._stated import generated_cell, limits_text

from conftest import ROOT

COURSE = load_course(ROOT)


@pytest.mark.parametrize("module", COURSE.modules, ids=lambda m: m.id)
def test_each_exercise_states_the_limits_the_grader_applies(module):
    for path in (module.solution, module.exercise_notebook):
        cell = generated_cell(json.loads(path.read_text()))
        assert cell is not None, f"{path}: no limits cell; run `python -m autograder._stated`"
        assert "".join(cell["source"]) == limits_text(COURSE, module), \
            f"{path}: its limits cell is stale; run `python -m autograder._stated`, then nbgrader generate_assignment"


def test_the_text_follows_the_registry():
    module = COURSE.module("04_tf_function")
    text = limits_text(COURSE, module)
    lim = COURSE.limits
    for value in (lim.startup_timeout_s, lim.call_timeout_s, lim.compile_timeout_s, lim.memory_mb, lim.output_kb):
        assert f"{value:g}" in text
    assert "`torch_step` and `cross_step`" in text
    changed = dataclasses.replace(COURSE, limits=dataclasses.replace(lim, call_timeout_s=7))
    assert "one call of one of your functions: 7 s" in limits_text(changed, module)
    assert "may compile" not in limits_text(COURSE, COURSE.module("01_tensors"))
