"""Grade 40 synthetic submissions of module 01 several ways, with the same grades each way:

0. plain `nbgrader autograde`: nbgrader's own pipeline, running each notebook in the student's kernel, where
   the test cells call `check()` (the anchor; the course's ClashGrade step switched off);
1. `nbgrader autograde` through the course's configuration (ClashGrade, serial);
2. `clash grade --workers 2`;
3. `clash grade --scheduler` on a Dask LocalCluster with 2 single-threaded worker processes.

    python benchmarks/grade_class.py [--students 40] [--no-plain]

Prints each way's wall time and throughput, and its speed-up over the anchor. Exits 1 if the grades differ.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from classroom import ASSIGNMENT, WRONG_TORCH, gradebook_scores, make_course, submit, with_solution  # noqa: E402


def make_class(dest: Path, students: int) -> Path:
    course = make_course(dest)
    for i in range(students):
        kind = ("correct", "correct", "wrong", "untouched")[i % 4]
        answers = {"correct": with_solution(), "wrong": with_solution(torch_loss_and_grad=WRONG_TORCH),
                   "untouched": None}[kind]
        submit(course, f"{kind}{i:02d}", answers)
    return course


def timed(cmd: list[str], cwd: Path) -> float:
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {run.stderr[-1500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=40)
    ap.add_argument("--no-plain", action="store_true", help="skip plain nbgrader (slow: a kernel per student)")
    args = ap.parse_args()
    from dask.distributed import LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        names = ("serial", "workers", "dask") if args.no_plain else ("plain", "serial", "workers", "dask")
        courses = [make_class(Path(tmp) / name, args.students) for name in names]
        clash = [sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT]
        nbgrader = [sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT]
        times = {}
        if not args.no_plain:
            config = courses[0] / "nbgrader_config.py"  # nbgrader's default pipeline: Execute in the kernel
            config.write_text(config.read_text() + "\nfrom nbgrader.converters import Autograde\n"
                              "c.Autograde.autograde_preprocessors = "
                              "Autograde.class_traits()['autograde_preprocessors'].make_dynamic_default()\n")
            times["plain nbgrader autograde (kernel per student; anchor)"] = timed(nbgrader, courses[0])
        times["nbgrader autograde with ClashGrade (serial)"] = timed(nbgrader, courses[-3])
        times["clash grade --workers 2"] = timed(clash + ["--workers", "2"], courses[-2])
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            times["clash grade --scheduler (Dask LocalCluster, 2 workers)"] = timed(
                clash + ["--scheduler", cluster.scheduler_address], courses[-1])
        grades = [gradebook_scores(c) for c in courses]
        anchor = next(iter(times.values()))
        serial = times["nbgrader autograde with ClashGrade (serial)"]
        for way, seconds in times.items():
            print(f"{way:<58} {seconds:7.1f} s  {args.students / seconds:5.2f} submissions/s  "
                  f"{anchor / seconds:5.2f}x the first row  {serial / seconds:4.2f}x serial ClashGrade")
        same = all(g == grades[0] for g in grades)
        totals = sorted({v for g in grades for v in g.values()})
        print(f"{len(grades[0])} students graded each way; same grades each way: {same}; scores seen: {totals}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
