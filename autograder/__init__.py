"""Clash of Frameworks' grader: one check for the CLI, the notebook and nbgrader."""
import sys as _sys

from autograder._checker import CheckError, run_check
from autograder._registry import Course, RegistryError, load_course
from autograder._result import CheckResult, PartResult
from autograder._source import NotebookError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("clash-of-frameworks")
    except PackageNotFoundError:   # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = ["run_check", "check", "show_progress", "load_course", "Course", "CheckResult", "PartResult",
           "RegistryError", "NotebookError", "CheckError"]


def check(target: str, *, device: str = "auto", framework: str = "both") -> None:
    """In a notebook: check the code this kernel has run; shows the result and fails the cell on a failure."""
    from autograder._notebook import check as _check
    return _check(target, device=device, framework=framework)


def show_progress() -> None:
    """In a notebook: the course map, with every module's lesson links, exercise status and points (the same
    progress file as `clash`)."""
    from autograder._panel import show_progress as _show
    return _show()


def _install_in_kernel() -> None:
    # Record cells from the moment autograder is imported in a kernel (see autograder._notebook).
    if "IPython" not in _sys.modules:
        return
    from IPython import get_ipython
    shell = get_ipython()
    if shell is not None and hasattr(shell, "events"):
        from autograder._notebook import install
        install(shell)


_install_in_kernel()
