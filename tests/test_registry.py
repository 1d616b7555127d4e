"""The registry is the whole course: every file it derives exists, and every course file is registered."""
import importlib
import json
from pathlib import Path

import pytest

from autograder import RegistryError, load_course

from conftest import ROOT

COURSE_DIRS = ("lessons", "solutions", "exercises")


def registered_paths(course):
    for m in course.modules:
        yield from m.lessons.values()
        yield m.solution
        yield m.exercise_notebook


def test_every_registered_file_exists(course):
    missing = [str(p.relative_to(ROOT)) for p in registered_paths(course) if not p.is_file()]
    assert not missing, f"registered but missing: {missing}"


def test_every_course_file_is_registered(course):
    known = {p.resolve() for p in registered_paths(course)}
    found = {p.resolve() for d in COURSE_DIRS for p in (ROOT / d).rglob("*")
             if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    assert not found - known, f"not registered in course.toml: {sorted(str(p) for p in found - known)}"
    specs = {p.stem for p in (ROOT / "autograder" / "exercises").glob("m*.py")}
    assert specs == {m.spec_module.rsplit(".", 1)[1] for m in course.modules}


def test_each_spec_checks_exactly_the_registered_parts(course):
    for m in course.modules:
        spec = importlib.import_module(m.spec_module)
        assert list(spec.PARTS) == [p.id for p in m.exercise.parts], m.id
        # BASELINE (reference-only code) and HELPERS (grader code in both workers) are optional code strings.
        assert isinstance(getattr(spec, "BASELINE", ""), str), m.id
        helpers = getattr(spec, "HELPERS", [])
        assert all(isinstance(h, str) for h in ([helpers] if isinstance(helpers, str) else helpers)), m.id


def grade_cells(path: Path):
    nb = json.loads(path.read_text())
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("grade")}


def test_solution_grade_cells_match_the_registry(course):
    """One grade cell per part, worth the part's points, calling check on that part."""
    for m in course.modules:
        cells = grade_cells(m.solution)
        assert len(cells) == len(m.exercise.parts)
        for part in m.exercise.parts:
            cell = cells.get(f"test_{part.id}")
            assert cell is not None, f"{m.solution.name}: no grade cell test_{part.id}"
            assert cell["metadata"]["nbgrader"]["points"] == part.points
            assert "".join(cell["source"]).strip() == f'check("{m.id}.{part.id}")'


def test_every_part_has_a_hint_and_points(course):
    for m in course.modules:
        for p in m.exercise.parts:
            assert p.hint.strip() and p.points > 0 and p.title.strip()


def test_every_part_has_a_concept_hint_that_names_no_api(course):
    """Two levels (issue 14): `clash hint` gives the idea first, then the API; the idea must not be the API."""
    import re
    for m in course.modules:
        for p in m.exercise.parts:
            assert p.concept.strip(), f"{m.id}.{p.id} has no concept hint"
            code = re.findall(r"\b(?:tf|torch|keras|np|nn)\.\w+|`|\w\(", p.concept)
            assert not code, f"{m.id}.{p.id}: its concept names code: {code}"
            assert p.concept != p.hint


def solution_statements(module) -> set[str]:
    """Every line of the solution's code with at least 20 characters, comments and spaces dropped."""
    import re
    nb = json.loads(module.solution.read_text())
    lines = ("".join(c["source"]).splitlines() for c in nb["cells"] if c["cell_type"] == "code")
    return {s for src in lines for line in src if len(s := re.sub(r"\s+", "", line.split("#")[0])) >= 20}


def test_no_hint_hands_over_a_line_of_the_solution(course):
    """Issue 14: hints name the concept, then the API, never the answer. The API-level hints used to hold whole
    solution lines (`converter.optimizations = [tf.lite.Optimize.DEFAULT]`, `scaler.scale(loss).backward()`)."""
    import re
    given = []
    for module in course.modules:
        statements = solution_statements(module)
        for part in module.exercise.parts:
            for text in (part.hint, part.concept, *part.hints.values()):
                flat = re.sub(r"\s+", "", text)
                given += [f"{module.id}/{part.id}: {s}" for s in statements if s in flat]
    assert not given, "hints that contain a line of the solution:\n" + "\n".join(given)


def test_notebooks_are_committed_without_outputs(course):
    for path in registered_paths(course):
        nb = json.loads(path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"], 1) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{path.name}: cells {dirty} hold outputs"
        assert nb["metadata"].get("kernelspec"), f"{path.name}: no kernelspec (JupyterLab would ask for one)"


def test_parts_resolve_by_exercise_qualified_and_bare_ids(course):
    m, parts = course.resolve("01_tensors")
    assert parts == tuple(p.id for p in m.exercise.parts)
    assert course.resolve("01_tensors.tf_grad")[1] == ("tf_grad",)
    assert course.resolve("tf_grad")[1] == ("tf_grad",)
    with pytest.raises(RegistryError, match="no exercise or part 'nope'"):
        course.resolve("nope")
    with pytest.raises(RegistryError, match="has no part 'nope'"):
        course.resolve("01_tensors.nope")


@pytest.mark.parametrize("text,error", [
    ("[[module]]\nid = 'x'\ntitle = 'X'\n", "module x lacks 'exercise'"),
    ("[[module]]\nid = 'x'\ntitle = 'X'\n[module.exercise]\ntitle = 'E'\n", "exercise has no parts"),
    ("[[module]]\nid = 'x'\ntitle = 'X'\n[module.exercise]\ntitle = 'E'\n[[module.exercise.part]]\nid = 'p'\n"
     "title = 'P'\npoints = 1\nframework = 'jax'\nkind = 'cross'\nhint = 'h'\n", "framework 'jax' is not one of"),
    ("[[module]]\nid = 'x'\ntitle = 'X'\n[module.exercise]\ntitle = 'E'\n[[module.exercise.part]]\nid = 'p'\n"
     "title = 'P'\npoints = 1\nframework = 'torch'\nkind = 'performance'\nhint = 'h'\n", "needs threshold_cpu"),
    ("[[module]\n", "course.toml"),
    ("", "registers no modules"),
])
def test_a_broken_registry_says_what_is_wrong(tmp_path, text, error):
    (tmp_path / "course.toml").write_text(text)
    with pytest.raises(RegistryError, match=error):
        load_course(tmp_path)
