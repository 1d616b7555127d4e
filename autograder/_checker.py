"""One check: run the student's and the reference's code in two fresh workers and judge every part."""
from __future__ import annotations

import importlib
import importlib.util
import secrets
import time
from pathlib import Path

import numpy as np

from autograder._compare import Mismatch
from autograder._context import Context, GraderError, NeedsReference
from autograder._registry import Course, Limits, load_course
from autograder._result import FAILED, NEEDS_REFERENCE, PASSED, SKIPPED, CheckResult, PartResult
from autograder._sandbox import Worker, WorkerError, worker_env
from autograder._source import NotebookError, answer_cells, cells_for, notebook_sources

DEVICES = ("auto", "cpu", "cuda")
FRAMEWORK_CHOICES = ("both", "torch", "tensorflow")


class CheckError(RuntimeError):
    """The check itself could not run: not a grade. Kept for callers that catch it; `run_check` itself reports a
    reference worker that did not start (a device that is not there, say) as failed parts with the reason, so that
    no face can mistake it for a result."""


def run_check(target: str, *, notebook: str | Path | None = None, sources: list[tuple[str, str]] | None = None,
              device: str = "auto", framework: str = "both", course: Course | None = None,
              seed: int | None = None, limits: Limits | None = None, zygote=None) -> CheckResult:
    """Check an exercise (or one part: 'EXERCISE.PART') and return its result.

    `sources` are (label, code) pairs, e.g. the cells a kernel has run; otherwise the code cells of
    `notebook` (by default the exercise's notebook in exercises/). Raises NotebookError or RegistryError for
    input that cannot be checked at all; any other failure is a failed part with its reason, never a mark. A
    `zygote` (autograder._zygote) forks the workers instead of starting fresh interpreters: for grading many
    notebooks.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if framework not in FRAMEWORK_CHOICES:
        raise ValueError(f"framework must be one of {FRAMEWORK_CHOICES}, got {framework!r}")
    started = time.perf_counter()
    course = course or load_course()
    module, part_ids = course.resolve(target)
    exercise = module.exercise
    spec = importlib.import_module(module.spec_module)
    frameworks = ["torch", "tensorflow"] if framework == "both" else [framework]
    path = Path(notebook) if notebook else module.exercise_notebook
    student_cells = cells_for(sources if sources is not None else notebook_sources(path), frameworks)
    if sources is None:
        _refuse_another_exercise(path, module, course)
    has_reference = module.solution.is_file()
    reference_cells = cells_for(notebook_sources(module.solution) if has_reference else [], frameworks)
    seed = secrets.randbits(63) if seed is None else seed

    limits = limits or course.limits
    parts = {p.id: p for p in exercise.parts}
    grader = worker_module(module.spec_module)

    def start(role: str) -> Worker:
        return Worker(role, student_cells if role == "student" else reference_cells, frameworks, device, limits,
                      zygote, grader)
    # Without a zygote of the caller's (a notebook kernel's, a class's), the check starts its own: the frameworks
    # are imported once and every worker (student, reference, each part's verifier) is a fork of it, instead of a
    # new interpreter importing them again (half the CPU of a terminal check).
    own_zygote = zygote is None
    if own_zygote:
        from autograder._zygote import Zygote
        zygote = Zygote(frameworks, worker_env(device))
    try:
        student, reference = start("student"), start("reference")
    except BaseException:
        if own_zygote:
            zygote.close()
        raise
    result = CheckResult(exercise=exercise.id, title=exercise.title, parts=[], device=device,
                         notebook=str(path) if sources is None else "(the kernel's cells)", seed=seed,
                         frameworks=frameworks)
    try:
        try:
            reference.wait_ready()
        except WorkerError as e:  # no verdict is possible: every part fails, saying why (never a mark)
            result.error = f"the grader's reference worker did not start: {str(e).removeprefix('your code ')}"
            result.parts = [_part_result(parts[pid], FAILED, f"not checked: {result.error}") for pid in part_ids]
            result.isolation, result.device = "not started", f"{device} (not started)"
            return result
        try:
            ready = student.wait_ready()
        except WorkerError as e:
            result.error = str(e)
            ready = None
        info = reference.ready["info"]   # the device and versions: from the course's own worker
        result.device = _device_words(info)
        result.versions = {k: v for k, v in info.items() if k in ("torch", "tensorflow")}
        result.isolation = ", ".join(student.isolation) if student.jail_pid else "not started"
        result.isolation_missing = dict(student.isolation_missing)
        result.timings["startup"] = time.perf_counter() - started
        cell_errors = ready["cell_errors"] if ready else []
        # Timed parts go last, when the reference worker has nothing else to do.
        order = sorted(part_ids, key=lambda pid: parts[pid].kind == "performance")
        results, fatal = {}, {}
        for pid in order:
            part = parts[pid]
            rng = np.random.default_rng([seed, exercise.parts.index(part)])
            t0 = time.perf_counter()
            if result.error:
                results[pid] = _part_result(part, FAILED, "not checked: the notebook's code did not run")
            else:
                # A part that ended a worker (a timeout, a crash, the memory limit) fails alone: the next part
                # gets a fresh one, and only parts calling the same function fail with that cause.
                if not student.alive:
                    student.close()
                    student = start("student")
                if not reference.alive:
                    reference.close()
                    reference = start("reference")
                ctx = Context(part, rng, info["device"], student, reference, has_reference, cell_errors, fatal)
                results[pid] = _run_part(spec.PARTS[pid], ctx, part, frameworks)
                if not student.alive and ctx.calling and ctx.calling not in fatal:
                    fatal[ctx.calling] = f"{ctx.calling} ended the worker in part {pid}: " + \
                        results[pid].message.removeprefix("your code ")
            result.timings[pid] = time.perf_counter() - t0
        result.parts = [results[pid] for pid in part_ids]
        return result
    finally:
        student.close()
        reference.close()
        if own_zygote:
            zygote.close()
        result.timings["total"] = time.perf_counter() - started


def _refuse_another_exercise(path: Path, module, course: Course) -> None:
    """A notebook whose answer cells are another exercise's, none of this one's: say which it is, instead of a
    "not defined" for every function."""
    held = answer_cells(path)
    if not held or held & _answer_ids(module):
        return
    for other in course.modules:
        ids = _answer_ids(other)
        if other is not module and ids and len(held & ids) * 2 >= len(ids):
            raise NotebookError(f"{path} holds exercise {other.id}'s answers ({', '.join(sorted(held & ids))}), "
                                f"none of {module.id}'s: check it with `clash check {other.id} --notebook {path}`")


def _answer_ids(module) -> set[str]:
    """The answer cells of a module's exercise, from the released notebook (a student's copy has no solutions)."""
    return answer_cells(module.exercise_notebook) or answer_cells(module.solution)


def worker_module(spec_module: str) -> str | None:
    """The exercise's grader code that runs in the workers: autograder.worker.<the spec's name>, if there is one.
    Found without importing it: it may import a framework this process has not loaded."""
    name = "autograder.worker." + spec_module.rsplit(".", 1)[-1]
    return name if importlib.util.find_spec(name) is not None else None


def _device_words(info: dict) -> str:
    if info["device"] == "cuda":
        return f"cuda ({info.get('gpu', 'GPU')})"
    return "cpu (no GPU: CPU thresholds)"


def _part_result(part, status: str, message: str, details: dict | None = None,
                 diagnosis: str | None = None) -> PartResult:
    targeted = diagnosis is not None and diagnosis in part.hints
    return PartResult(id=part.id, title=part.title, status=status, points=part.points if status == PASSED else 0.0,
                      max_points=part.points, message=message, hint=part.hint_for(diagnosis),
                      framework=part.framework, kind=part.kind, details=details or {},
                      concept="" if targeted else part.concept)


def _run_part(check, ctx: Context, part, frameworks: list[str]) -> PartResult:
    needed = ["torch", "tensorflow"] if part.framework == "both" else [part.framework]
    if not set(needed) <= set(frameworks):
        return _part_result(part, SKIPPED, f"skipped: needs {' and '.join(needed)}, checked {' and '.join(frameworks)}")
    try:
        message = check(ctx) or "passed"
        return _part_result(part, PASSED, message, ctx.details)
    except Mismatch as m:
        return _part_result(part, FAILED, str(m), ctx.details, m.diagnosis)
    except NeedsReference:
        return _part_result(part, NEEDS_REFERENCE,
                            "needs the reference solution, which this copy of the course lacks: not counted")
    except WorkerError as e:
        return _part_result(part, FAILED, str(e), ctx.details)
    except GraderError as e:
        return _part_result(part, FAILED, f"grader problem, not yours: {e}", ctx.details)
    except Exception as e:  # a bug in the course's spec must read as one line, never a traceback
        return _part_result(part, FAILED, f"grader problem, not yours: {type(e).__name__}: {e}", ctx.details)
