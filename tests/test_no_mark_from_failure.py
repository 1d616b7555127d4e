"""No failure is ever a mark: a submission the grader could not check scores 0 in every grade cell (nbgrader gives
full points to a code grade cell without outputs), and one such submission never stops `clash grade`.

The checks are monkeypatched: these properties live in the records and the grade cells, not in the frameworks."""
import json

import nbformat
import pytest
from click.testing import CliRunner
from nbgrader.utils import determine_grade

from autograder import _classgrade, grading
from autograder._checker import CheckError
from autograder._sandbox import WorkerError

from classroom import ASSIGNMENT, gradebook_scores, make_course, submit
from conftest import ROOT

RELEASED = ROOT / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def released_notebook():
    return nbformat.read(str(RELEASED), as_version=4)


def grade_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]


def scores_after_writing(record) -> dict[str, float]:
    """{grade_id: nbgrader's own score} once write_outputs has written the record into the released notebook."""
    nb = released_notebook()
    grading.write_outputs(nb, record)
    return {c.metadata.nbgrader.grade_id: determine_grade(c)[0] for c in grade_cells(nb)}


def raising(error):
    def check(*args, **kwargs):
        raise error
    return check


def passed_record(course, nb) -> dict:
    """What a check that passed every part returns."""
    exercise = course.module(ASSIGNMENT).exercise
    parts = {p.id: {"status": "passed", "points": p.points, "max_points": p.points, "title": p.title,
                    "hint": p.hint, "message": "passed"} for p in exercise.parts}
    return {"status": grading.GRADED, "reason": "", "score": exercise.max_score, "max_score": exercise.max_score,
            "parts": parts, "key": grading.code_key(ASSIGNMENT, nb)}


@pytest.mark.parametrize("error", [CheckError("the grader's reference worker did not start: it died"),
                                   WorkerError("the worker exited with status 0"),
                                   ValueError("a grader bug\nwith a second line")])
def test_decide_fails_every_part_when_the_check_raises(course, monkeypatch, error):
    monkeypatch.setattr(grading, "run_check", raising(error))
    nb = released_notebook()
    record = grading.decide(course, ASSIGNMENT, nb)
    exercise = course.module(ASSIGNMENT).exercise
    assert record["status"] == grading.FAILED and record["score"] == 0.0
    assert record["max_score"] == exercise.max_score and record["key"] == grading.code_key(ASSIGNMENT, nb)
    assert record["reason"] and "\n" not in record["reason"]
    assert set(record["parts"]) == {p.id for p in exercise.parts}
    for p in exercise.parts:
        part = record["parts"][p.id]
        assert part["status"] == "failed" and part["points"] == 0 and part["max_points"] == p.points
        assert part["title"] == p.title and part["hint"] == p.hint
        assert part["message"] == f"not graded: {record['reason']}"


def test_a_check_that_raised_scores_zero_in_every_grade_cell(course, monkeypatch):
    monkeypatch.setattr(grading, "run_check", raising(CheckError("the grader's reference worker did not start")))
    record = grading.decide(course, ASSIGNMENT, released_notebook())
    scores = scores_after_writing(record)
    assert len(scores) == len(course.module(ASSIGNMENT).exercise.parts) and set(scores.values()) == {0}


def test_a_record_without_parts_scores_zero_in_every_grade_cell():
    scores = scores_after_writing({"status": grading.FAILED, "reason": "who knows", "score": 0.0, "parts": {}})
    assert scores and set(scores.values()) == {0}


def test_a_part_missing_from_the_record_scores_zero_and_the_others_keep_theirs(course):
    record = passed_record(course, released_notebook())
    del record["parts"]["tf_grad"]
    scores = scores_after_writing(record)
    assert scores.pop("test_tf_grad") == 0
    points = {f"test_{p.id}": p.points for p in course.module(ASSIGNMENT).exercise.parts}
    assert scores == {gid: points[gid] for gid in scores}


def test_every_grade_cell_gets_outputs_and_a_reason(course):
    nb = released_notebook()
    grading.write_outputs(nb, {"status": grading.FAILED, "reason": "the reference worker died", "parts": {}})
    for cell in grade_cells(nb):
        error = [o for o in cell.outputs if o.output_type == "error"]
        assert error and error[0].evalue == "not graded: the reference worker died"


@pytest.fixture
def clash_grade_sandbox(monkeypatch, tmp_path):
    """ClashGrade as nbgrader runs it, with no framework and no record written into the repository."""
    saved = {}
    monkeypatch.setattr(grading, "find_root", lambda: ROOT)
    monkeypatch.setattr(grading, "_shared_zygote", lambda: None)
    monkeypatch.setattr(grading, "save_record", lambda root, a, s, record: saved.setdefault(s, record))
    monkeypatch.setattr(grading, "precomputed", {})
    return saved


def run_clash_grade(nb):
    resources = {"nbgrader": {"assignment": ASSIGNMENT, "student": "ada", "notebook": ASSIGNMENT}}
    nb, _ = grading.ClashGrade().preprocess(nb, resources)
    return {c.metadata.nbgrader.grade_id: determine_grade(c)[0] for c in grade_cells(nb)}


def test_the_nbgrader_preprocessor_fails_every_cell_when_decide_raises(clash_grade_sandbox, monkeypatch):
    monkeypatch.setattr(grading, "decide", raising(RuntimeError("no reference worker")))
    scores = run_clash_grade(released_notebook())
    record = clash_grade_sandbox["ada"]
    assert scores and set(scores.values()) == {0}
    assert record["status"] == grading.FAILED and record["reason"] == "grader error: RuntimeError: no reference worker"
    assert record["score"] == 0 and {p["points"] for p in record["parts"].values()} == {0}


def test_the_nbgrader_preprocessor_fails_every_cell_when_writing_raises(course, clash_grade_sandbox, monkeypatch):
    def malformed(course_, assignment, nb, **kwargs):  # a passed part without its title: write_outputs raises
        record = passed_record(course, nb)
        del record["parts"]["torch_grad"]["title"]
        return record
    monkeypatch.setattr(grading, "decide", malformed)
    scores = run_clash_grade(released_notebook())
    assert scores and set(scores.values()) == {0}
    assert clash_grade_sandbox["ada"]["status"] == grading.FAILED
    assert "KeyError" in clash_grade_sandbox["ada"]["reason"]


class InlinePool:
    """The local pool without zygotes: each check runs `grading.decide` (monkeypatched) at once."""

    def __init__(self, workers, device):
        from concurrent.futures import ThreadPoolExecutor
        self.executor = ThreadPoolExecutor(1)

    def submit(self, course, assignment, nb):
        return self.executor.submit(grading.decide, course, assignment, nb)

    as_completed = staticmethod(_classgrade.as_completed)

    def close(self):
        self.executor.shutdown()


@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("no-mark"))
    for student in ("ada", "bo", "check_raises", "decide_raises", "write_raises"):
        submit(course, student)
    return course


def test_clash_grade_goes_on_past_a_check_and_a_write_that_raise(small_class, monkeypatch):
    from autograder.cli import main
    course = small_class
    monkeypatch.chdir(course)  # and back: grade_class moves to the course root
    monkeypatch.setattr(_classgrade, "_LocalPool", InlinePool)
    monkeypatch.setattr(grading, "_shared_zygote", lambda: None)

    def whose(nb):
        return next((s for s in ("check_raises", "decide_raises") if s in str([c.get("source") for c in nb["cells"]])),
                    None)

    def run_check(*args, **kwargs):  # only check_raises's check gets this far: the real decide catches it
        raise CheckError("the grader's reference worker did not start")

    def decide(course_, assignment, nb, *args, **kwargs):
        if whose(nb) == "check_raises":
            return real_decide(course_, assignment, nb)
        if whose(nb) == "decide_raises":
            raise RuntimeError("the pool lost its worker")
        return passed_record(course_, nb)

    def write(api, course_, assignment, sub, record):
        if sub.student == "write_raises":
            raise OSError("disk full")
        return original_write(api, course_, assignment, sub, record)

    real_decide, original_write = grading.decide, _classgrade._write
    monkeypatch.setattr(grading, "run_check", run_check)
    monkeypatch.setattr(grading, "decide", decide)
    monkeypatch.setattr(_classgrade, "_write", write)
    mark_submission(course, "check_raises")
    mark_submission(course, "decide_raises")

    result = CliRunner().invoke(main, ["grade", ASSIGNMENT, "--workers", "1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("2 graded, 3 failed"), result.output
    cells = [[cell.strip() for cell in line.split("│")[1:4]] for line in lines if line.count("│") >= 4]
    rows = {student: [status, score] for student, status, score in cells if student}  # not a wrapped reason's line
    assert rows == {"ada": ["graded", "10/10"], "bo": ["graded", "10/10"],
                    "check_raises": ["failed", "-"], "decide_raises": ["failed", "-"],
                    "write_raises": ["failed", "-"]}, result.output

    records = {s: json.loads((course / "grading" / ASSIGNMENT / f"{s}.json").read_text())
               for s in ("check_raises", "decide_raises", "write_raises")}
    assert records["check_raises"]["reason"] == "the grader's reference worker did not start"
    assert records["decide_raises"]["reason"] == "grader error: RuntimeError: the pool lost its worker"
    assert records["write_raises"]["reason"] == "could not write the grade: grader error: OSError: disk full"
    assert "written_by" not in records["write_raises"]  # the next run tries it again
    for record in records.values():
        assert record["status"] == "failed" and len(record["parts"]) == 6
        assert {p["points"] for p in record["parts"].values()} == {0}
    # The gradebook: the honest ones earned their 10, the ones whose check raised 0 (not nbgrader's 10 for no output)
    assert gradebook_scores(course) == {"ada": 10, "bo": 10, "check_raises": 0, "decide_raises": 0}

    report = CliRunner().invoke(main, ["report", ASSIGNMENT]).output
    assert all(f"{s:<20} failed      -" in report for s in records), report
    assert f"{'ada':<20} graded      10/10" in report, report


def mark_submission(course, student):
    """Put the student's name in a code cell, so that the monkeypatched check knows whose notebook it has."""
    path = course / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "torch_loss_and_grad")
    cell["source"] = f"# {student}\n" + "".join(cell["source"])
    path.write_text(json.dumps(nb, indent=1))
