"""`clash init`: a student's working copy of the course, from the installed package (after rustlings' `init`).

A plain `pip install` carries the course's student files as data (pyproject's data-files: course.toml, the map
notebook, the lessons and the exercises, never the solutions) under <prefix>/share/clash-of-frameworks. An
editable install reads them from its checkout instead. The copy is an ordinary folder: `clash` finds it by its
course.toml, and records progress in it.
"""
from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from autograder._registry import REGISTRY_FILE, RegistryError, load_course

SHARE = Path("share") / "clash-of-frameworks"


def course_source() -> Path:
    """Where the installed course's student files are: the package's data folder, else the checkout of an editable
    install."""
    for base in {sysconfig.get_path("data"), sysconfig.get_config_var("prefix") or ""}:
        candidate = Path(base) / SHARE
        if (candidate / REGISTRY_FILE).is_file():
            return candidate
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / REGISTRY_FILE).is_file():
        return checkout
    raise RegistryError(f"this installation carries no course ({SHARE} is missing under {sysconfig.get_path('data')})")


def student_files(source: Path) -> list[Path]:
    """The files a student's copy holds, relative to the course root: what course.toml derives, minus solutions."""
    course = load_course(source)
    files = [Path(REGISTRY_FILE), Path("course.ipynb")]
    for module in course.modules:
        files += [p.relative_to(course.root) for p in module.lessons.values()]
        files.append(module.exercise_notebook.relative_to(course.root))
    return files


def init_course(dest: Path, source: Path | None = None) -> list[Path]:
    """Copy the course's student files into `dest`, which must not hold a course already. Returns what it wrote."""
    source = source or course_source()
    dest = Path(dest)
    if (dest / REGISTRY_FILE).exists():
        raise FileExistsError(f"{dest} already holds a course ({REGISTRY_FILE}); your work there is kept")
    written = []
    for rel in student_files(source):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target)
        written.append(target)
    return written
