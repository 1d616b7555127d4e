"""Lessons: each module's PyTorch and TensorFlow notebooks mirror each other and run clean, headless."""
import json
import re

import nbformat
import pytest

from conftest import ROOT
from headless import run_notebook


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


def run(path):
    return run_notebook(nbformat.read(path, as_version=4), path.parent)


def stderr_and_errors(nb):
    return [(i, o.get("text", o.get("evalue", ""))[:300]) for i, c in enumerate(nb.cells, 1)
            for o in c.get("outputs", []) if o.output_type == "error" or o.get("name") == "stderr"]


@pytest.mark.slow
@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_lessons_run_headless_without_errors_or_stderr_and_twins_agree(module):
    outputs = {}
    for framework, path in module.lessons.items():
        nb = run(path)
        assert not stderr_and_errors(nb), f"{path.name}: {stderr_and_errors(nb)}"
        outputs[framework] = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    if module.id == "01_tensors":  # the two training loops reach the same weights from the same start
        weights = {fw: re.search(r"final weights: \[(.*?)\]", text).group(1).split() for fw, text in outputs.items()}
        diff = max(abs(float(a) - float(b)) for a, b in zip(weights["torch"], weights["tensorflow"]))
        assert diff <= 1e-5, weights
