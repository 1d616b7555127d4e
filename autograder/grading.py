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
from autograder._registry import Course, find_root, load_course

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


def decide(course: Course, assignment: str, nb: dict, zygote=None, device: str = "auto") -> dict:
    """Check a (sanitized) submission and return its grading record: status, reason, score, parts."""
    try:
        result = run_check(assignment, sources=code_cells(nb), course=course, device=device, zygote=zygote)
    except CheckError as e:
        return {"status": FAILED, "reason": str(e), "score": 0.0, "parts": {}}
    problems = grade_cell_problems(course, assignment, nb)
    for part in result.parts:  # nbgrader cannot score a part whose grade cell is gone: neither do we
        if f"grade cell test_{part.id} was deleted" in problems:
            part.status, part.points, part.message = "failed", 0.0, "its grade cell was deleted from the notebook"
    reason = "; ".join(([result.error] if result.error else []) + problems)
    return {"status": FAILED if reason else GRADED, "reason": reason, "score": result.score,
            "max_score": result.max_score, "device": result.device, "seconds": round(result.timings["total"], 2),
            "parts": {p.id: {"status": p.status, "points": p.points, "max_points": p.max_points,
                             "message": p.message, "hint": p.hint, "title": p.title} for p in result.parts},
            "key": code_key(assignment, nb), "result": result.to_dict()}


def write_outputs(nb, record: dict) -> None:
    """Give each grade cell the outputs nbgrader scores: an error for a failed part, clean output for a pass."""
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        part = record["parts"].get(meta.get("grade_id", "").removeprefix("test_"))
        if part is None:
            continue
        passed = part["status"] == "passed"
        mark = "✓" if passed else "✗"
        text = f"{mark} {part['title']}: {part['points']:g}/{part['max_points']:g} — {part['message']}"
        page = (f"<p><b>{mark} {html.escape(part['title'])}</b>: {part['points']:g}/{part['max_points']:g} — "
                f"{html.escape(part['message'])}</p>")
        if not passed:
            text += f"\nHint: {part['hint']}"
            page += f"<p><i>Hint:</i> {html.escape(part['hint'])}</p>"
        outputs = [{"output_type": "display_data", "metadata": {}, "data": {"text/plain": text, "text/html": page}}]
        if not passed:
            outputs.append({"output_type": "error", "ename": "CheckFailed", "evalue": part["message"],
                            "traceback": [f"CheckFailed: {part['message']}"]})
        from nbformat import from_dict
        cell.outputs = [from_dict(o) for o in outputs]
        cell.execution_count = 1


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
            records[path.stem] = {"status": FAILED, "reason": f"{path} is unreadable"}
    return records


class ClashGrade(NbGraderPreprocessor):
    """Re-decide every grade cell with the isolated checker (replaces nbgrader's Execute in autograde)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        assignment, student = info["assignment"], info["student"]
        root = find_root()
        course = load_course(root)
        record = precomputed.pop(code_key(assignment, nb), None)
        if record is None:
            record = decide(course, assignment, nb, zygote=_shared_zygote())
        write_outputs(nb, record)
        record["written_by"] = "nbgrader"
        save_record(root, assignment, student, record)
        self.log.info("clash: %s %s: %s %s/%s %s", assignment, student, record["status"], record["score"],
                      record.get("max_score"), record.get("reason", ""))
        return nb, resources
