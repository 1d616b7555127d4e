"""`clash grade`: grade every submission of an assignment in parallel, into nbgrader's own gradebook.

Three phases, so that SQLite only ever has one writer:
1. find and sanitize the submissions (reads the gradebook); unreadable ones get a failed record at once;
2. check them in parallel (threads sharing one zygote, or a Dask cluster), a pure computation;
3. as each finishes, the main thread runs nbgrader's own autograde for that student, which writes the
   precomputed result into the gradebook exactly as `nbgrader autograde` would.
A student whose record already says it was written, for the same submitted file, is skipped: an interrupted
run picks up where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from autograder import grading
from autograder._registry import Course, load_course
from autograder._source import NotebookError, notebook_sources

SANITIZE = ("ClearOutput", "DeduplicateIds", "OverwriteKernelspec", "OverwriteCells", "CheckCellMetadata")


@dataclass
class Submission:
    student: str
    path: Path
    digest: str = ""
    nb: dict | None = None
    record: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)   # deleted or duplicated grade cells


def _nbgrader_config(root: Path):
    from traitlets.config.loader import PyFileConfigLoader
    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def find_submissions(course: Course, assignment: str) -> list[Submission]:
    """Every submitted/<student>/<assignment>/ folder; problems that stop grading are recorded, not raised."""
    exercise = course.module(assignment).exercise
    subs = []
    for folder in sorted((course.root / "submitted").glob(f"*/{assignment}")):
        expected = folder / f"{assignment}.ipynb"
        sub = Submission(student=folder.parent.name, path=expected)
        if not expected.is_file():
            others = sorted(p.name for p in folder.glob("*.ipynb"))
            why = f"renamed notebook: found {', '.join(others)}, expected {expected.name}" if others \
                else f"no notebook: expected {expected.name}"
            sub.record = grading.failed_record(exercise, why)
        else:
            sub.digest = hashlib.sha256(expected.read_bytes()).hexdigest()
            try:
                notebook_sources(expected)  # the same one-line diagnosis as `clash check`
            except NotebookError as e:
                why = str(e).replace(f"{course.root}{os.sep}", "")
                sub.record = grading.failed_record(exercise, f"malformed notebook: {why}")
        subs.append(sub)
    return subs


def sanitize(course: Course, assignment: str, sub: Submission, config) -> None:
    """Apply nbgrader's own sanitizing (locked and test cells restored from the gradebook) before checking."""
    import nbformat
    from nbgrader import preprocessors

    nb = nbformat.read(str(sub.path), as_version=4)
    resources = {"nbgrader": {"notebook": assignment, "assignment": assignment, "student": sub.student,
                              "db_url": f"sqlite:///{course.root / 'gradebook.db'}"}}
    problems = []
    try:
        problems = grading.grade_cell_problems(course, assignment, nb)  # before DeduplicateIds hides them
        for name in SANITIZE:
            nb, resources = getattr(preprocessors, name)(config=config).preprocess(nb, resources)
    except Exception as e:  # nbgrader's own complaint about this notebook, in one line, after ours
        complaint = f"nbgrader: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        why = "; ".join(problems + [complaint]) if problems else f"malformed notebook: {complaint}"
        sub.record = grading.failed_record(course.module(assignment).exercise, why)
        return
    sub.nb, sub.record, sub.problems = nb, {}, problems


def _decide_remote(root: str, assignment: str, nb: dict, device: str) -> dict:
    """What a Dask worker runs: one check, with that worker process's own zygote."""
    return grading.decide(load_course(Path(root)), assignment, nb, zygote=grading._shared_zygote(), device=device)


def _visible_gpus() -> list[str]:
    """The GPU ids this process may use: $CUDA_VISIBLE_DEVICES as given, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(row for row in out.splitlines() if row.startswith("GPU "))]


class _LocalPool:
    """Threads that check submissions. A check borrows a zygote from a queue and gives it back, so with
    --device cuda (one zygote per GPU) no two checks ever share a GPU."""

    def __init__(self, workers: int, device: str):
        from autograder._sandbox import worker_env
        from autograder._zygote import Zygote
        self.device = device
        if device == "cuda":
            gpus = _visible_gpus()
            if not gpus:
                raise RuntimeError("--device cuda: no GPU found (nvidia-smi -L lists none)")
            self.zygotes = [Zygote(["torch", "tensorflow"], worker_env("cuda") | {"CUDA_VISIBLE_DEVICES": gpu})
                            for gpu in gpus]
        else:
            self.zygotes = [Zygote(["torch", "tensorflow"], worker_env(device))] * workers
        self.free: queue.Queue = queue.Queue()
        for z in self.zygotes:
            self.free.put(z)
        self.executor = ThreadPoolExecutor(len(self.zygotes))

    def _decide(self, course: Course, assignment: str, nb: dict) -> dict:
        zygote = self.free.get()
        try:
            return grading.decide(course, assignment, nb, zygote, self.device)
        finally:
            self.free.put(zygote)

    def submit(self, course: Course, assignment: str, nb: dict):
        return self.executor.submit(self._decide, course, assignment, nb)

    @staticmethod
    def as_completed(futures):
        return as_completed(futures)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        for z in set(self.zygotes):
            z.close()


class _DaskPool:
    def __init__(self, address: str, device: str):
        from dask.distributed import Client
        self.client, self.device = Client(address), device

    def submit(self, course: Course, assignment: str, nb: dict):
        return self.client.submit(_decide_remote, str(course.root), assignment, nb, self.device, pure=False)

    @staticmethod
    def as_completed(futures):
        from dask.distributed import as_completed as dask_as_completed
        return dask_as_completed(futures)

    def close(self) -> None:
        self.client.close()


def grade_class(assignment: str, *, workers: int = 2, scheduler: str | None = None, device: str = "auto",
                on_progress=None, course: Course | None = None) -> list[Submission]:
    """Grade every submission of `assignment`; returns them all with their records (also saved to disk)."""
    import warnings

    import nbformat
    from nbgrader.apps import NbGraderAPI
    from sqlalchemy.exc import SAWarning
    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's own ORM chatter on every autograde
    from nbgrader.coursedir import CourseDirectory

    course = course or load_course()
    os.chdir(course.root)  # nbgrader resolves its folders from here
    course.module(assignment)
    config = _nbgrader_config(course.root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    from nbgrader.api import Gradebook, MissingEntry
    try:
        with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gb:
            gb.find_assignment(assignment)
    except MissingEntry:
        raise RuntimeError(f"the gradebook does not know {assignment}: run `nbgrader generate_assignment "
                           f"{assignment} --force` first") from None
    subs = find_submissions(course, assignment)
    exercise = course.module(assignment).exercise
    done = grading.load_records(course.root, assignment)
    todo, finished = [], []
    for sub in subs:
        old = done.get(sub.student, {})
        unchanged = old.get("digest") == sub.digest and sub.digest
        if old.get("written_by") and unchanged and not grading.grader_at_fault(old):
            sub.record = old
            finished.append(sub)
            continue
        if not sub.record:
            try:
                sanitize(course, assignment, sub, config)
            except Exception as e:  # one submission's trouble is its own failed record, never the class's
                sub.record = grading.failed_record(exercise, grading.grader_error(e))
        if sub.record:  # could not be graded at all
            sub.record.update(digest=sub.digest)
            grading.save_record(course.root, assignment, sub.student, sub.record)
            finished.append(sub)
        else:
            todo.append(sub)
    if on_progress:
        on_progress(len(finished), len(subs), None)
    if not todo:
        return sorted(subs, key=lambda s: s.student)
    pool = _DaskPool(scheduler, device) if scheduler else _LocalPool(workers, device)
    try:
        pending = {}
        for sub in todo:
            try:
                pending[pool.submit(course, assignment, nbformat.from_dict(sub.nb))] = sub
            except Exception as e:
                _write_or_fail(api, course, assignment, sub, _grader_failure(exercise, assignment, sub, e))
                finished.append(sub)
        for future in pool.as_completed(list(pending)):
            sub = pending.pop(future)
            try:
                record = future.result()
            except Exception as e:  # the grader's fault, not the student's: say so, grade the rest
                record = _grader_failure(exercise, assignment, sub, e)
            _write_or_fail(api, course, assignment, sub, record)
            finished.append(sub)
            if on_progress:
                on_progress(len(finished), len(subs), sub)
    finally:
        pool.close()
    return sorted(subs, key=lambda s: s.student)


def _grader_failure(exercise, assignment: str, sub: Submission, e: Exception) -> dict:
    """A check that raised: every part failed, keyed by the submission's code so nbgrader writes it, not re-checks."""
    return grading.failed_record(exercise, grading.grader_error(e), grading.code_key(assignment, sub.nb))


def _write_or_fail(api, course: Course, assignment: str, sub: Submission, record: dict) -> None:
    """Write one submission; if writing it raises, it gets a failed record and the class goes on."""
    try:
        _write(api, course, assignment, sub, record)
    except Exception as e:
        reason = f"{grading.WRITE_FAULT} {grading.grader_error(e)}"
        failed = grading.failed_record(course.module(assignment).exercise, reason, record.get("key", ""))
        sub.record = failed | {"digest": sub.digest}  # no written_by: the next run tries this one again
        grading.save_record(course.root, assignment, sub.student, sub.record)


def _write(api, course: Course, assignment: str, sub: Submission, record: dict) -> None:
    """The single writer: nbgrader's own autograde for one student, fed the precomputed result."""
    if sub.problems:
        record["status"] = grading.FAILED
        record["reason"] = "; ".join(filter(None, [record.get("reason"), *sub.problems]))
    key = record.get("key") or grading.code_key(assignment, sub.nb)
    grading.precomputed[key] = record
    t0 = time.perf_counter()
    try:
        outcome = api.autograde(assignment, sub.student, force=True, create=True)
    finally:
        grading.precomputed.pop(key, None)
    saved = grading.load_records(course.root, assignment).get(sub.student, {})
    if not outcome.get("success"):
        error = (outcome.get("error") or outcome.get("log") or "nbgrader autograde failed").strip().splitlines()
        reason = f"nbgrader autograde failed: {(error or [''])[-1][:200]}"
        saved = grading.failed_record(course.module(assignment).exercise, reason, key)
    else:
        if saved.get("key") == key:  # nbgrader wrote our result: keep the problems found before sanitizing
            saved["status"], saved["reason"] = record["status"], record.get("reason", "")
        saved["written_by"] = "clash grade"
    saved["digest"] = sub.digest
    saved["write_seconds"] = round(time.perf_counter() - t0, 2)
    grading.save_record(course.root, assignment, sub.student, saved)
    sub.record = saved


def report_rows(course: Course, assignment: str) -> list[dict]:
    """One row per submission: graded with a score, or failed with the reason (never a bare 0)."""
    records = grading.load_records(course.root, assignment)
    unreadable = {sub.student: sub.record for sub in find_submissions(course, assignment) if sub.record}
    rows = []
    for folder in sorted((course.root / "submitted").glob(f"*/{assignment}")):
        student = folder.parent.name
        rec = records.get(student) or unreadable.get(student)
        if rec is None:
            rows.append({"student": student, "status": "not graded", "score": "", "max_score": "",
                         "reason": "no grading record: run `clash grade` (or `nbgrader autograde`)"})
            continue
        rows.append({"student": student, "status": rec.get("status"), "score": rec.get("score", ""),
                     "max_score": rec.get("max_score", course.module(assignment).exercise.max_score),
                     "reason": rec.get("reason", ""), "seconds": rec.get("seconds", "")})
    return rows


def missing_protections(course: Course, assignment: str) -> dict[str, str]:
    """The jail's protections that were missing while any of these submissions was checked, with the reason."""
    missing: dict[str, str] = {}
    for record in grading.load_records(course.root, assignment).values():
        missing.update(record.get("isolation_missing") or {})
    return missing


def write_report(course: Course, assignment: str) -> Path:
    import csv
    path = course.root / grading.RECORDS / assignment / "report.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = report_rows(course, assignment)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", "status", "score", "max_score", "reason", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
    return path

