"""How long `clash watch` takes to re-check after a save: edit the notebook, wait for the new result.

    python benchmarks/watch_recheck.py [--module 01_tensors] [--saves 5]

It copies the module's solution to a scratch folder, starts `clash watch MODULE --notebook COPY`, waits for the
first check, then saves an edit `--saves` times, each time timing from the write to the re-check's summary line.
Every line is one measurement; the last is `recheck_s=<median>`.
"""
import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DONE = "(checked in "   # the watch's last line after each check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="01_tensors")
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from autograder import load_course
    solution = load_course(ROOT).module(args.module).solution
    scratch = Path(tempfile.mkdtemp(prefix="clash-watch-"))
    copy = scratch / solution.name
    shutil.copy(solution, copy)
    env = dict(os.environ, CLASH_PROGRESS_DIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "autograder.cli", "watch", args.module, "--notebook", str(copy)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for_check() -> str:
        deadline = time.monotonic() + args.timeout
        summary = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                if proc.poll() is not None:
                    raise SystemExit(f"clash watch exited ({proc.returncode}): {''.join(summary)[-2000:]}") from None
                continue
            summary.append(line)
            if line.startswith(DONE):
                return "".join(summary)
        raise SystemExit(f"no check within {args.timeout:g} s: {''.join(summary)[-2000:]}")

    try:
        t0 = time.perf_counter()
        first = wait_for_check()
        print(f"first check: {time.perf_counter() - t0:.2f} s ({first.splitlines()[0]})", flush=True)
        times = []
        for i in range(args.saves):
            time.sleep(0.5)
            nb = json.loads(copy.read_text())
            nb["cells"][0]["source"] = "".join(nb["cells"][0]["source"]) + f"\n<!-- save {i} -->"
            t0 = time.perf_counter()
            copy.write_text(json.dumps(nb, indent=1))
            result = wait_for_check()
            times.append(time.perf_counter() - t0)
            head = next(line for line in result.splitlines() if " points on " in line)
            print(f"save {i + 1}: re-checked in {times[-1]:.2f} s ({head.strip()})", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"recheck_s={statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
