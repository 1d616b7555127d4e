"""Run every registered lesson headless, one after another, as CI does; print each one's wall time and the total.

    python benchmarks/lesson_times.py
"""
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from autograder import load_course  # noqa: E402

from headless import run_notebook  # noqa: E402  (the same headless runs as the lesson test)


def main() -> None:
    course = load_course(ROOT)
    total = 0.0
    for module in course.modules:
        for path in module.lessons.values():
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            run_notebook(nb, path.parent)
            elapsed = time.perf_counter() - t0
            total += elapsed
            print(f"{path.name:40s} {elapsed:6.1f} s", flush=True)
    print(f"{'all lessons':40s} {total:6.1f} s")


if __name__ == "__main__":
    main()
