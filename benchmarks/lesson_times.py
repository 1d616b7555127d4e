"""Run every registered lesson headless, one after another, as CI does; print each one's wall time and the total.

    python benchmarks/lesson_times.py
"""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from autograder import load_course  # noqa: E402


def main() -> None:
    course = load_course(Path(__file__).resolve().parent.parent)
    total = 0.0
    for module in course.modules:
        for framework, path in module.lessons.items():
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            elapsed = time.perf_counter() - t0
            total += elapsed
            print(f"{path.name:40s} {elapsed:6.1f} s", flush=True)
    print(f"{'all lessons':40s} {total:6.1f} s")


if __name__ == "__main__":
    main()
