"""`check()` inside a Jupyter kernel: it checks the code this kernel has run, not the file saved on disk.

Importing autograder in a kernel registers a `pre_run_cell` hook that keeps the latest source of each cell
(by the cell id the front end sends, else by its text), in the order they were last run. Cells run before
the import come from the kernel's input history.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from autograder._checker import CheckError, run_check
from autograder._progress import record
from autograder._registry import RegistryError, load_course
from autograder._result import CheckResult
from autograder._source import cells_for

_cells: dict[str, tuple[str, str]] = {}
_installed: set[int] = set()
_cache: dict[tuple, CheckResult] = {}
_zygotes: dict[str, object] = {}  # per device: the kernel's first check imports the frameworks, later ones fork


def _zygote(device: str):
    if device not in _zygotes:
        from autograder._sandbox import worker_env
        from autograder._zygote import Zygote
        _zygotes[device] = Zygote(["torch", "tensorflow"], worker_env(device))
    return _zygotes[device]


class CheckUnavailable(RuntimeError):
    """The check could not run at all (unknown id, no reference worker …): one line in the notebook."""

    def _render_traceback_(self):
        return [f"CheckUnavailable: {self}"]


class CheckFailed(AssertionError):
    """Raised by a failing check so the cell fails (nbgrader scores it 0); shows one line, not a traceback."""

    def __init__(self, result: CheckResult):
        failed = [p for p in result.parts if not p.passed]
        super().__init__("; ".join(f"{p.id}: {p.message}" for p in failed) or str(result.error))
        self.result = result

    def _render_traceback_(self):  # IPython shows this instead of a traceback
        return [f"CheckFailed: {self}"]


def _remember(info) -> None:
    key = info.cell_id or info.raw_cell
    _cells.pop(key, None)
    from IPython import get_ipython
    shell = get_ipython()
    _cells[key] = (f"In [{shell.execution_count if shell else '?'}]", info.raw_cell)


def install(shell) -> None:
    if id(shell) in _installed:
        return
    _installed.add(id(shell))
    for n, raw in enumerate(shell.user_ns.get("In", [])[1:], 1):
        _cells.setdefault(raw, (f"In [{n}]", raw))
    shell.events.register("pre_run_cell", _remember)


def kernel_sources() -> list[tuple[str, str]]:
    return list(_cells.values())


def _checked(target: str, device: str, framework: str, fresh: bool = False) -> CheckResult:
    """The result for `target` over the cells this kernel has run (one run serves every part until the code
    changes; `fresh` runs again regardless, as the Re-check button does)."""
    try:
        course = load_course()
        module, part_ids = course.resolve(target)
    except RegistryError as e:
        raise CheckUnavailable(str(e)) from None
    sources = kernel_sources()
    frameworks = ["torch", "tensorflow"] if framework == "both" else [framework]
    digest = hashlib.sha256(repr(cells_for(sources, frameworks)).encode()).hexdigest()
    key = (module.id, digest, device, framework)
    if fresh:  # the Re-check button: only the parts on show, always run again
        try:
            result = run_check(target, sources=sources, device=device, framework=framework, course=course,
                               zygote=_zygote(device))
        except (CheckError, ValueError) as e:
            raise CheckUnavailable(str(e)) from None
        record(course.root, result)
        return result.only(part_ids)
    # A run serves every test cell whose parts it checked, until the code changes. A miss checks only the parts
    # asked for: under Run All the code changes before every test cell, and checking the whole exercise each
    # time would repeat every earlier part.
    cached = _cache.get(key)
    if cached is None or not set(part_ids) <= {p.id for p in cached.parts}:
        try:
            result = run_check(target, sources=sources, device=device, framework=framework, course=course,
                               zygote=_zygote(device))
        except (CheckError, ValueError) as e:
            raise CheckUnavailable(str(e)) from None
        record(course.root, result)
        if cached is not None:
            fresh_ids = {p.id for p in result.parts}
            result = replace(result, parts=[p for p in cached.parts if p.id not in fresh_ids] + result.parts)
        _cache.clear()
        _cache[key] = result
    return _cache[key].only(part_ids)


def check(target: str, *, device: str = "auto", framework: str = "both") -> None:
    """Check an exercise or one part ('01_tensors' or '01_tensors.torch_grad') against this kernel's code.

    Shows the Check panel (a widget in JupyterLab; static HTML and text where there is no widget front end, as
    under nbclient, nbconvert and nbgrader) and raises CheckFailed when a part fails.
    """
    from IPython import get_ipython

    from autograder._panel import show

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("check() runs inside a notebook kernel; in a terminal use `clash check`")
    install(shell)
    result = _checked(target, device, framework)
    show(result, recheck=lambda: _checked(target, device, framework, fresh=True))
    if not result.passed:
        raise CheckFailed(result)
    return None
