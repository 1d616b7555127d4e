"""One `clash check` of each module's solution, this checkout against another, interleaved.

    python benchmarks/check_times.py [--other /path/to/another/checkout] [--runs 1] [MODULE ...]

Each run starts `python -m autograder.cli check MODULE --notebook solutions/...` in a fresh interpreter (as a
self-learner's terminal does), alternating the two checkouts so that the machine's load falls on both alike; it
prints the wall time of each and the score. `--other` must hold its own `.venv` (a clone set up by `.ci/run`).
"""
import argparse
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(root: Path, module: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    run = subprocess.run([str(root / ".venv" / "bin" / "python"), "-m", "autograder.cli", "check", module,
                          "--notebook", f"solutions/{module}/{module}.ipynb"], cwd=root, capture_output=True,
                         text=True, timeout=1200)
    head = (run.stdout.splitlines() or ["(no output)"])[0]
    return time.perf_counter() - t0, head.split(": ", 1)[-1].split(" on ")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*")
    parser.add_argument("--other", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    modules = args.modules or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    roots = {"this": ROOT} | ({"other": args.other.resolve()} if args.other else {})
    for module in modules:
        times = {name: [] for name in roots}
        scores = {}
        for _ in range(args.runs):
            for name, root in roots.items():
                t, scores[name] = one(root, module)
                times[name].append(t)
        print(f"{module:16s} " + "  ".join(f"{name} {statistics.median(ts):5.1f} s ({scores[name]})"
                                            for name, ts in times.items()), flush=True)


if __name__ == "__main__":
    main()
