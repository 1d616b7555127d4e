"""The capstone's training step in each mode, timed by a notebook's own benchmark_step, at several batch sizes.

    python benchmarks/capstone_modes.py [--framework torch] [--batches 32,100,1024] [NOTEBOOK]

Runs the notebook's code cells of the chosen frameworks (default: the 09 solution, both frameworks) in this
process, then benchmark_step(modes, batch) for each batch size, and prints a table with the device named. With
`--framework torch` it needs no TensorFlow, so it runs on a GPU machine that has PyTorch alone, where every graded
part of 09 is skipped (each needs both frameworks).
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from autograder._source import cells_for, notebook_sources  # noqa: E402

MODES = {"torch": ("torch_eager", "torchscript", "torch_compile"), "tensorflow": ("tf_eager", "tf_function", "tf_xla")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", default=str(ROOT / "solutions" / "09_capstone" / "09_capstone.ipynb"))
    parser.add_argument("--framework", default="both", choices=("both", "torch", "tensorflow"))
    parser.add_argument("--batches", default="32,100,1024")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    frameworks = ["torch", "tensorflow"] if args.framework == "both" else [args.framework]
    sources = notebook_sources(Path(args.notebook))
    # benchmark_step's cell names both frameworks but touches TensorFlow only in its tf_* branches.
    kept = cells_for(sources, frameworks)
    labels = {c["label"] for c in kept}
    kept += cells_for([(label, src) for label, src in sources if "def benchmark_step" in src and label not in labels],
                      ["torch", "tensorflow"])
    namespace = {"__name__": "__capstone__"}
    for cell in sorted(kept, key=lambda c: int(c["label"].split()[-1])):
        exec(compile(cell["source"], f"{args.notebook} ({cell['label']})", "exec"), namespace)
    device = "CPU"
    if "torch" in frameworks and namespace.get("DEVICE") == "cuda":
        import torch
        device = f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    modes = [m for fw in frameworks for m in MODES[fw]]
    print(f"device: {device}; modes {', '.join(modes)}; median of {args.steps} interleaved steps", flush=True)
    print(f"| batch | {' | '.join(modes)} | seconds to measure |")
    print(f"|---:|{'---:|' * len(modes)}---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        t0 = time.perf_counter()
        times = namespace["benchmark_step"](modes, batch_size=batch, steps=args.steps)
        cells_ms = " | ".join(f"{times[m] * 1e3:.3f} ms" for m in modes)
        print(f"| {batch} | {cells_ms} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
