#!/usr/bin/env bash
# The PyTorch side of the course on a CUDA machine that has no TensorFlow (the device tool's image: torch, numpy,
# click, rich; nothing can be fetched there). Results go to $OUT (the device tool's folder), or ./gpu-out.
#
#     bash benchmarks/gpu_torch.sh            # DEVICE=cpu PY=.venv/bin/python to rehearse it on a CPU machine
#
# Steps, each timed: the machine; an editable install without dependencies (the workers start with `python -I`, so
# the package must be importable from site-packages); tests/test_gpu.py (every module's torch parts on CUDA);
# `clash check --framework torch` of the 05, 06, 07 and 09 solutions and the untouched 06 and 07 exercises; 07's
# threshold against the solution's ratio over 5 runs; 09's six modes' PyTorch half, timed by the solution's own
# benchmark_step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

step() {  # step NAME COMMAND...: run it, append its output and wall time to $OUT/NAME.txt and the log
    local name=$1 t0=$SECONDS
    shift
    echo "== $name: $*" | tee -a "$OUT/log.txt"
    "$@" 2>&1 | tee -a "$OUT/$name.txt" "$OUT/log.txt"
    echo "== $name took $((SECONDS - t0)) s" | tee -a "$OUT/$name.txt" "$OUT/log.txt"
}

step machine bash -c "nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi'; nproc; $PY -c \"import sys, torch; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available() and \
torch.cuda.get_device_name(0))\""
step install "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e .
step gpu_tests "$PY" -m pytest tests/test_gpu.py -o addopts="" -p no:cacheprovider -n 4 -q -rA
for m in 05_torchscript 06_compilers 07_performance 09_capstone; do
    step checks "$PY" -m autograder.cli check "$m" --notebook "solutions/$m/$m.ipynb" --framework torch --device "$DEVICE"
done
for m in 06_compilers 07_performance; do
    step checks "$PY" -m autograder.cli check "$m" --notebook "exercises/$m/$m.ipynb" --framework torch --device "$DEVICE"
done
step thresholds "$PY" benchmarks/thresholds.py --framework torch --device "$DEVICE" --runs 5
step capstone "$PY" benchmarks/capstone_modes.py --framework torch --batches 32,100,1024
# The capstone showdown's PyTorch side (PyTorch and, where Keras is installed, Keras 3 on PyTorch), GPU-synchronised.
step showdown "$PY" benchmarks/capstone_showdown.py --modes torch --configs 32x8,256x64,1024x128 --out "$OUT/showdown"
