"""One `clash check` of module 01 against its floor, interleaved in one run.

The floor is what any check must pay: a fresh Python that imports torch and tensorflow (`python -c "import
torch, tensorflow"`, teardown included) plus the exercise's own compute (the solution's functions called as
often as the check calls them, timed part included). The target is check / floor <= 1.3.

    python benchmarks/check_vs_floor.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "01_tensors" / "01_tensors.ipynb"

# The exercise's own compute, in one process after the imports: every call the check makes of the student's
# functions, once (the reference's calls are the grader's overhead, and so part of what is measured).
COMPUTE = r'''
import json, sys, numpy as np
from autograder._source import notebook_sources, cells_for
from autograder.exercises.m01_tensors import _problem
ns = {}
for cell in cells_for(notebook_sources(sys.argv[1]), ["torch", "tensorflow"]):
    exec(cell["source"], ns)
torch, tf = ns["torch"], ns["tf"]
rng = np.random.default_rng(0)
T = lambda args: [torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
F = lambda args: [tf.constant(a) if isinstance(a, np.ndarray) else a for a in args]
for _ in range(3):
    ns["torch_loss_and_grad"](*T(_problem(rng)))
    ns["tf_loss_and_grad"](*F(_problem(rng)))
for n in (300, 1):
    a = _problem(rng, n=n, d=12); ns["torch_loss_and_grad"](*T(a)); ns["tf_loss_and_grad"](*F(a))
for _ in range(2):
    a = _problem(rng) + [0.05, 40]; ns["torch_fit"](*T(a)); ns["tf_fit"](*F(a))
for _ in range(5):
    a = _problem(rng, n=32, d=5); ns["tf_loss_and_grad_graph"](*F(a)); ns["tf_loss_and_grad"](*F(a))
calls = int(sys.argv[2])
for _ in range(calls):
    a = F(_problem(rng, n=64, d=6)); ns["tf_loss_and_grad_graph"](*a); ns["tf_loss_and_grad"](*a)
'''


def wall(cmd: list[str], ok=(0,)) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if run.returncode not in ok:  # a floor that failed early would flatter the check
        sys.exit(f"{cmd[:3]} failed with {run.returncode}: {run.stderr[-400:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    check_cmd = [sys.executable, "-m", "autograder.cli", "check", "01_tensors", "--notebook", str(SOLUTION), "--json"]
    # One untimed check first: warms the file cache like the floor's first run, and tells how many timed
    # calls the performance part makes (its rounds and batch size), so the floor can make as many.
    result = json.loads(subprocess.run(check_cmd, cwd=ROOT, capture_output=True, text=True).stdout)
    perf = next(p["details"] for p in result["parts"] if p["kind"] == "performance")
    timed_calls = (perf["rounds"] + 3) * perf["per_round"]
    imports = [sys.executable, "-c", "import torch, tensorflow"]
    compute = [sys.executable, "-c", "import torch, tensorflow\n" + COMPUTE, str(SOLUTION), str(timed_calls)]
    rows = []
    for i in range(args.repeats):  # interleaved: floor, check, floor, check ...
        t_import = wall(imports)       # for information: the import alone
        floor = wall(compute)          # the floor: a fresh import, then the exercise's compute, in one process
        t_check = wall(check_cmd)
        rows.append((t_import, floor, t_check))
        print(f"run {i + 1}: import alone {t_import:.2f} s, floor (import + compute) {floor:.2f} s, "
              f"clash check {t_check:.2f} s, ratio {t_check / floor:.2f}")
    floor = statistics.median(r[1] for r in rows)
    check = statistics.median(r[2] for r in rows)
    print(f"median: floor {floor:.2f} s, clash check {check:.2f} s, ratio {check / floor:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
