"""How often each timed part fails a correct answer while other work keeps a core busy: the course's load test.

    python benchmarks/load_test.py [--runs 100] [--busy 1] [--answer solution|trace] [PART ...]

PART is EXERCISE.PART; the default is every part whose verdict rests on timing: the performance parts (a ratio
against a threshold) and the parts that judge a student's own measurements (07 `timer`, 09 `benchmark`,
`benchmark_scales`). Each run checks one part of the solution notebook (one zygote for all runs, so every run's
workers are fresh forks with a new seed, as in a notebook kernel) while `--busy` processes spin on the CPU. The last
lines give, per part, the false fails and the measured ratio (or quotient) beside the threshold, and the load
average meanwhile. `--answer trace` checks 07's `make_fast` written with torch.jit.trace instead, a reasonable
answer that does not fuse: its passes are what the threshold is set against.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autograder import load_course, run_check  # noqa: E402
from autograder._sandbox import worker_env  # noqa: E402
from autograder._zygote import Zygote  # noqa: E402

TIMED = ["01_tensors.graph_speed", "04_tf_function.speed", "07_performance.graph_speedup", "07_performance.timer",
         "09_capstone.benchmark", "09_capstone.benchmark_scales"]

# Answers other than the solution, by name: a student's reasonable choices that the thresholds must place.
ANSWERS = ["trace"]


def answer_cells(name: str) -> dict:
    from test_m07_performance import TRACE
    return {"trace": {"make_fast": TRACE}}[name]


def quotient(details: dict) -> float | None:
    """What the verdict compared: a speed ratio, or a student's measurement over the grader's."""
    if "ratio" in details and "grader_ratio" in details:
        return details["ratio"] / details["grader_ratio"]
    if "growth" in details and "grader_growth" in details:
        return details["growth"] / details["grader_growth"]
    for key in ("ratio", "quotient"):
        if key in details:
            return details[key]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=TIMED)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--busy", type=int, default=1, help="processes spinning on the CPU meanwhile")
    parser.add_argument("--answer", choices=["solution", *ANSWERS], default="solution")
    args = parser.parse_args()
    course = load_course(ROOT)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    zygote = Zygote(["torch", "tensorflow"], worker_env("auto"))
    summary = []
    try:
        for target in args.parts:
            module, _ = course.resolve(target)
            part = next(p for p in module.exercise.parts if f"{module.id}.{p.id}" == target)
            notebook = module.solution
            if args.answer != "solution":
                from conftest import notebook_with
                notebook = notebook_with(module.solution, answer_cells(args.answer),
                                         Path(f"/tmp/clash-load-test/{args.answer}-{module.id}.ipynb"))
            statuses, values, loads, device, t0 = [], [], [], "", time.perf_counter()
            for run in range(args.runs):
                result = run_check(target, notebook=notebook, course=course, zygote=zygote)
                (p,) = result.parts
                device = result.device
                q = quotient(p.details)
                statuses.append(p.status)
                loads.append(os.getloadavg()[0])
                if q is not None:
                    values.append(q)
                line = {"part": target, "run": run, "status": p.status, "value": q and round(q, 3)}
                if p.status != "passed":
                    line["message"] = p.message[:200]
                print(json.dumps(line), flush=True)
            threshold = part.threshold(device) if part.kind == "performance" else None
            spread = (f"{min(values):.2f}-{max(values):.2f}, median {statistics.median(values):.2f}"
                      if values else "none measured")
            summary.append(f"{target:30s} {args.answer}: {statuses.count('passed')}/{len(statuses)} passed on "
                           f"{device}; value {spread}" + (f"; threshold {threshold:g}x" if threshold else "")
                           + f"; load {min(loads):.1f}-{max(loads):.1f}; {time.perf_counter() - t0:.0f} s")
            print(summary[-1], flush=True)
    finally:
        for b in busy:
            b.kill()
        zygote.close()
    print("\n".join(["", f"{args.busy} busy process(es), {os.cpu_count()} cores:"] + summary))


if __name__ == "__main__":
    main()
