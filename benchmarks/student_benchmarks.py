"""How often a correct student benchmark fails 09's `benchmark` and `benchmark_scales` parts on a busy machine.

    python benchmarks/student_benchmarks.py [--runs 100] [--busy 1] [--attempts N] [--notebook NOTEBOOK]

Each run checks both parts against the notebook (forked workers, a new seed) while `--busy` processes spin on the
CPU. It prints every run's quotient (the student's ratio or growth over the grader's) and, at the end, the false
fails and the quotient range beside the bands in autograder/exercises/m09_capstone.py. `--attempts 1` measures the
raw rate of a single measurement (the grader measures a miss ATTEMPTS times). NOTEBOOK is `solution`,
`alternative` (the torch.utils.benchmark + timeit answer of tests/test_m09_capstone.py) or a wrong one, whose
passes are false passes: `wrong` (a mean that times the first calls) or `hard-coded` (numbers typed in).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autograder import load_course, run_check  # noqa: E402
from autograder._sandbox import worker_env  # noqa: E402
from autograder._zygote import Zygote  # noqa: E402
from autograder.exercises import m09_capstone as spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--busy", type=int, default=1, help="processes spinning on the CPU meanwhile")
    parser.add_argument("--attempts", type=int, default=spec.ATTEMPTS)
    parser.add_argument("--notebook", choices=("solution", "alternative", "wrong", "hard-coded"), default="solution")
    args = parser.parse_args()
    spec.ATTEMPTS = args.attempts
    course = load_course(ROOT)
    module = course.module("09_capstone")
    notebook = module.solution
    if args.notebook != "solution":
        from test_m09_capstone import ALTERNATIVES, HARD_CODED, WRONG

        from conftest import notebook_with
        answers = {"alternative": ALTERNATIVES, "wrong": WRONG, "hard-coded": HARD_CODED}[args.notebook]
        notebook = notebook_with(module.solution, {"benchmark_step": answers["benchmark_step"]},
                                 Path(f"/tmp/clash-student-benchmarks/{args.notebook}.ipynb"))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    zygote = Zygote(["torch", "tensorflow"], worker_env("auto"))
    quotients = {"benchmark": [], "benchmark_scales": []}
    fails = {part: 0 for part in quotients}
    correct = args.notebook in ("solution", "alternative")
    try:
        for run in range(args.runs):
            for part in quotients:
                (p,) = run_check(f"09_capstone.{part}", notebook=notebook, course=course, zygote=zygote).parts
                d = p.details
                mine, want = ("ratio", "grader_ratio") if part == "benchmark" else ("growth", "grader_growth")
                q = d[mine] / d[want] if mine in d and want in d else float("nan")
                quotients[part].append(q)
                fails[part] += p.status != "passed"
                print(json.dumps({"run": run, "part": part, "status": p.status, "quotient": round(q, 3),
                                  "attempts": d.get("attempts"), "student_ms": d.get("student_ms"),
                                  "grader_ms": d.get("grader_ms")}), flush=True)
    finally:
        for b in busy:
            b.kill()
        zygote.close()
    bands = {"benchmark": (1 / spec.BAND, spec.BAND), "benchmark_scales": (1 / spec.SCALES_BAND, spec.SCALES_HIGH)}
    for part, qs in quotients.items():
        finite = sorted(q for q in qs if q == q)
        verdict = f"{fails[part]} false fails" if correct else f"{len(qs) - fails[part]} false passes"
        print(f"{part:17s} {verdict} in {len(qs)} runs ({args.notebook}, {args.busy} busy, "
              f"{args.attempts} attempts): quotient {finite[0]:.2f}-{finite[-1]:.2f}, band "
              f"{bands[part][0]:.2f}-{bands[part][1]:.2f}")


if __name__ == "__main__":
    main()
