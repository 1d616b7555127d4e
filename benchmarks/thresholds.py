"""Every timed part's threshold beside the ratio the reference solution reaches, on this machine's device.

    python benchmarks/thresholds.py [--runs 5] [--framework torch] [--device cuda] [PART ...]

Each run is one `clash check` of the part against the solution notebook (fresh workers, a new seed). A threshold
should sit well under the slowest run: about half the median is the course's rule.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from autograder import load_course, run_check  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="EXERCISE.PART ids (default: every performance part)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--framework", default="both", choices=("both", "torch", "tensorflow"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    course = load_course(Path(__file__).resolve().parent.parent)
    targets = args.parts or [f"{m.id}.{p.id}" for m in course.modules for p in m.exercise.parts
                             if p.kind == "performance"]
    for target in targets:
        module, _ = course.resolve(target)
        part = next(p for p in module.exercise.parts if f"{module.id}.{p.id}" == target)
        if args.framework != "both" and part.framework not in (args.framework, "both"):
            print(f"{target:40s} skipped: a {part.framework} part")
            continue
        ratios, statuses, device, t0 = [], [], "", time.perf_counter()
        for _ in range(args.runs):
            result = run_check(target, notebook=module.solution, course=course, framework=args.framework,
                               device=args.device)
            (p,) = result.parts
            device = result.device
            statuses.append(p.status)
            if "ratio" in p.details:
                ratios.append(p.details["ratio"])
        wall = time.perf_counter() - t0
        threshold = part.threshold(device)
        if not ratios:
            print(f"{target:40s} no ratio measured: {statuses}")
            continue
        print(f"{target:40s} threshold {threshold:g}x on {device}: solution {min(ratios):.2f}–{max(ratios):.2f}x, "
              f"median {statistics.median(ratios):.2f}x over {len(ratios)} runs "
              f"({statuses.count('passed')} passed, {wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
