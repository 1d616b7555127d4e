"""The capstone's showdown over a sweep of batch and width: every mode, the table, the verdicts and the chart.

    python benchmarks/capstone_showdown.py [--configs 16x8,64x8,64x24,256x8,256x64] [--modes all] [--samples 30]
           [--out benchmarks/capstone_showdown]

Writes OUT.md (the table and the verdicts, the device named) and OUT.png (the chart). `--modes torch` keeps the
PyTorch-side modes (PyTorch and Keras on PyTorch), for a GPU machine that has no TensorFlow.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from autograder.showdown import MODES, run_showdown  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="16x8,64x8,64x24,256x8,256x64", help="BATCHxWIDTH, comma-separated")
    parser.add_argument("--modes", default="all", help="all, torch, or a comma-separated list")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "capstone_showdown"))
    args = parser.parse_args()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    modes = (list(MODES) if args.modes == "all" else
             [m for m, (group, _) in MODES.items() if group != "tensorflow"] if args.modes == "torch" else
             args.modes.split(","))
    t0 = time.perf_counter()
    report = run_showdown(configs, modes, samples=args.samples, progress=lambda m: print(m, flush=True),
                          isolate=True)  # a process per mode: each mode's memory is its own
    took = time.perf_counter() - t0
    text = f"{report.table()}\n\n{report.verdicts()}\n\nmeasured in {took:.0f} s\n"
    print(text)
    Path(args.out + ".md").write_text(text)
    report.chart(args.out + ".png")


if __name__ == "__main__":
    main()
