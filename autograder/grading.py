"""Grading with nbgrader: a preprocessor that re-decides every grade cell with the isolated checker.

`nbgrader autograde` normally runs the submission in the student's own kernel and scores each grade cell by its
outputs. That kernel can patch the comparisons, write to stderr, or die. `ClashGrade` replaces that step: it runs
the submission's code in the isolated checker and writes the outputs nbgrader scores (an error for a failed part,
clean outputs for a passed one). It also keeps a grading record per submission, so that a submission that could not
be graded is reported as such, never as a silent 0.
"""
from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

from nbgrader.preprocessors import NbGraderPreprocessor

from autograder._checker import CheckError, run_check
from autograder._progress import _write_atomically
from autograder._registry import Course, Exercise, find_root, load_course

GRADED, FAILED = "graded", "failed"   # a record's status: FAILED means "could not be graded", with a reason
RECORDS = Path("grading")

# Results computed ahead (by `clash grade`'s parallel workers), keyed by the code they graded: the nbgrader
# pass then writes them instead of checking again. A key that does not match is simply checked again.
precomputed: dict[str, dict] = {}
_zygote = None


def code_cells(nb: dict) -> list[tuple[str, str]]:
    """(label, source) of every code cell, labelled by position as `clash check` labels them."""
    return [(f"cell {i}", c["source"] if isinstance(c["source"], str) else "".join(c["source"]))
            for i, c in enumerate(nb["cells"], 1) if c.get("cell_type") == "code"]


def code_key(assignment: str, nb: dict) -> str:
    return hashlib.sha256(json.dumps([assignment, code_cells(nb)]).encode()).hexdigest()


def grade_cell_problems(course: Course, assignment: str, nb: dict) -> list[str]:
    """Grade cells deleted or duplicated by the student (nbgrader would silently drop or ignore them)."""
    module = course.module(assignment)
    found = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb["cells"]
             if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    problems = []
    for part in module.exercise.parts:
        n = found.count(f"test_{part.id}")
        if n == 0:
            problems.append(f"grade cell test_{part.id} was deleted")
        elif n > 1:
            problems.append(f"grade cell test_{part.id} appears {n} times")
    return problems


def _shared_zygote():
    """One zygote per grading process: the frameworks are imported once for the whole class."""
    global _zygote
    if _zygote is None:
        from autograder._sandbox import worker_env
        from autograder._zygote import Zygote
        _zygote = Zygote(["torch", "tensorflow"], worker_env("auto"))
    return _zygote


def one_line(text: str, limit: int = 300) -> str:
    """A reason fit for a table cell and a CSV field: one line, not too long."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failed_parts(exercise: Exercise | None, reason: str) -> dict[str, dict]:
    """Every part of the exercise, failed with 0 points: a submission that could not be graded earns nothing,
    and each of its grade cells still says why."""
    if exercise is None:
        return {}
    return {p.id: {"status": "failed", "points": 0.0, "max_points": p.points, "title": p.title, "hint": p.hint,
                   "message": f"not graded: {reason}"} for p in exercise.parts}


def failed_record(exercise: Exercise | None, reason: str, key: str = "") -> dict:
    """The record of a submission that could not be graded: FAILED, every part at 0, the reason in one line."""
    reason = one_line(reason)
    record = {"status": FAILED, "reason": reason, "score": 0.0, "parts": failed_parts(exercise, reason), "key": key}
    if exercise is not None:
        record["max_score"] = exercise.max_score
    return record


def grader_error(e: BaseException) -> str:
    return one_line(f"{GRADER_FAULT} {type(e).__name__}: {e}")


# Reasons that are the grader's fault, not the submission's: `clash grade` checks such a submission again next run.
GRADER_FAULT = "grader error:"
REFERENCE_FAULT = "the grader's reference worker did not start"
WRITE_FAULT = "could not write the grade:"


def grader_at_fault(record: dict) -> bool:
    reason = record.get("reason", "")
    return record.get("status") == FAILED and (reason.startswith(GRADER_FAULT) or REFERENCE_FAULT in reason
                                               or reason.startswith(WRITE_FAULT))


def decide(course: Course, assignment: str, nb: dict, zygote=None, device: str = "auto") -> dict:
    """Check a (sanitized) submission and return its grading record: status, reason, score, parts.

    A check that could not run is a FAILED record with every part at 0, never a record without parts (nbgrader
    would score grade cells left without outputs as full marks)."""
    exercise = course.module(assignment).exercise
    key = code_key(assignment, nb)
    try:
        return _checked_record(course, assignment, nb, zygote, device) | {"key": key}
    except CheckError as e:
        return failed_record(exercise, str(e), key)
    except Exception as e:  # a grader boundary: whatever broke, this submission is "not graded", not a mark
        return failed_record(exercise, grader_error(e), key)


def _checked_record(course: Course, assignment: str, nb: dict, zygote, device: str) -> dict:
    result = run_check(assignment, sources=code_cells(nb), course=course, device=device, zygote=zygote)
    problems = grade_cell_problems(course, assignment, nb)
    for part in result.parts:  # nbgrader cannot score a part whose grade cell is gone: neither do we
        if f"grade cell test_{part.id} was deleted" in problems:
            part.status, part.points, part.message = "failed", 0.0, "its grade cell was deleted from the notebook"
    reason = "; ".join(([result.error] if result.error else []) + problems)
    return {"status": FAILED if reason else GRADED, "reason": reason, "score": result.score,
            "max_score": result.max_score, "device": result.device, "seconds": round(result.timings["total"], 2),
            "parts": {p.id: {"status": p.status, "points": p.points, "max_points": p.max_points,
                             "message": p.message, "hint": p.hint, "title": p.title} for p in result.parts},
            "isolation": result.isolation, "isolation_missing": result.isolation_missing,
            "result": result.to_dict()}


def write_outputs(nb, record: dict) -> None:
    """Give EVERY code grade cell the outputs nbgrader scores: clean output for a passed part, an error for any
    other (failed, skipped, or missing from the record). A grade cell left without outputs would score full marks."""
    from nbformat import from_dict
    parts = record.get("parts") or {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.get("cell_type") != "code":
            continue
        grade_id = meta.get("grade_id", "")
        part = parts.get(grade_id.removeprefix("test_")) or _missing_part(grade_id, meta, record)
        cell.outputs = [from_dict(o) for o in _part_outputs(part)]
        cell.execution_count = 1


def _missing_part(grade_id: str, meta: dict, record: dict) -> dict:
    """A grade cell the record says nothing about: not graded, so 0 (never nbgrader's full marks for no outputs)."""
    why = record.get("reason") or "the grader has no result for this cell"
    return {"status": "failed", "points": 0.0, "max_points": float(meta.get("points", 0)), "title": grade_id,
            "hint": "ask your instructor: this cell was not graded", "message": f"not graded: {one_line(why)}"}


def _part_outputs(part: dict) -> list[dict]:
    passed = part["status"] == "passed"
    mark = "✓" if passed else "✗"
    text = f"{mark} {part['title']}: {part['points']:g}/{part['max_points']:g} — {part['message']}"
    page = (f"<p><b>{mark} {html.escape(part['title'])}</b>: {part['points']:g}/{part['max_points']:g} — "
            f"{html.escape(part['message'])}</p>")
    if not passed:
        text += f"\nHint: {part['hint']}"
        page += f"<p><i>Hint:</i> {html.escape(part['hint'])}</p>"
    outputs = [{"output_type": "display_data", "metadata": {}, "data": {"text/plain": text, "text/html": page}}]
    if not passed:  # the error output is what makes nbgrader score the cell 0
        outputs.append({"output_type": "error", "ename": "CheckFailed", "evalue": part["message"],
                        "traceback": [f"CheckFailed: {part['message']}"]})
    return outputs


def record_path(root: Path, assignment: str, student: str) -> Path:
    return Path(root) / RECORDS / assignment / f"{student}.json"


def save_record(root: Path, assignment: str, student: str, record: dict) -> None:
    record = {k: v for k, v in record.items() if k != "result"} | {"student": student, "assignment": assignment}
    _write_atomically(record_path(root, assignment, student), json.dumps(record, indent=1))


def load_records(root: Path, assignment: str) -> dict[str, dict]:
    folder = Path(root) / RECORDS / assignment
    records = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records[path.stem] = json.loads(path.read_text())
        except ValueError:
            records[path.stem] = failed_record(None, f"{path} is unreadable")
    return records


class ClashGrade(NbGraderPreprocessor):
    """Re-decide every grade cell with the isolated checker (replaces nbgrader's Execute in autograde)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        assignment, student = info["assignment"], info["student"]
        root = find_root()
        exercise = None
        try:
            course = load_course(root)
            exercise = course.module(assignment).exercise
            record = precomputed.pop(code_key(assignment, nb), None)
            if record is None:
                record = decide(course, assignment, nb, zygote=_shared_zygote())
            write_outputs(nb, record)
        except Exception as e:  # never let a grader failure leave grade cells without outputs (= full marks)
            record = failed_record(exercise, grader_error(e))
            write_outputs(nb, record)
        record["written_by"] = "nbgrader"
        save_record(root, assignment, student, record)
        self.log.info("clash: %s %s: %s %s/%s %s", assignment, student, record["status"], record["score"],
                      record.get("max_score"), record.get("reason", ""))
        return nb, resources
