"""What the jail costs: a jailed student worker against an unconfined one, interleaved in one run.

Each round starts one worker of each kind (both frameworks imported, as in a check) and times it from spawn to
ready; the jailed one also pays its namespaces, mounts, uid drop and Landlock. Then it times a pause and resume of a
jailed worker, which freezes its whole PID namespace (the grader does this around every timed request).

    python benchmarks/jail_overhead.py [--rounds 6] [--frameworks torch,tensorflow]
"""
from __future__ import annotations

import argparse
import statistics
import time

from autograder._registry import Limits
from autograder._sandbox import Worker

LIMITS = Limits(startup_timeout_s=180, call_timeout_s=60, memory_mb=4096, output_kb=64)


def started_in(role: str, frameworks: list[str]) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    worker = Worker(role, [], frameworks, "cpu", LIMITS)
    try:
        worker.wait_ready()
        return time.perf_counter() - t0, worker.isolation
    finally:
        worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--frameworks", default="torch,tensorflow")
    args = parser.parse_args()
    frameworks = [f for f in args.frameworks.split(",") if f]
    times: dict[str, list[float]] = {"jailed": [], "unconfined": []}
    protections: list[str] = []
    for r in range(args.rounds):  # alternate which goes first: neither always meets a warmer page cache
        for role in ("student", "reference") if r % 2 else ("reference", "student"):
            seconds, isolation = started_in(role, frameworks)
            times["jailed" if role == "student" else "unconfined"].append(seconds)
            protections = isolation or protections
    worker = Worker("student", [], [], "cpu", LIMITS)
    try:
        worker.wait_ready()
        pauses = []
        for _ in range(50):
            t0 = time.perf_counter()
            worker.pause()
            worker.resume()
            pauses.append(time.perf_counter() - t0)
    finally:
        worker.close()
    jailed, free = (statistics.median(times[k]) for k in ("jailed", "unconfined"))
    print(f"protections in force: {', '.join(protections)}")
    started = "+".join(frameworks) or "no framework"
    print(f"worker start with {started}, median of {args.rounds}: jailed {jailed:.3f} s, "
          f"unconfined {free:.3f} s, overhead {jailed - free:+.3f} s ({100 * (jailed / free - 1):+.1f} %)")
    print(f"pause + resume of a jailed worker's whole tree: median {statistics.median(pauses) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
