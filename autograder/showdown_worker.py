"""One process of the capstone showdown (autograder.showdown), serving one runtime's modes (or one mode, when the
parent isolates them): it builds training steps and times them on request.

Run as `python -m autograder.showdown_worker GROUP`, GROUP being "torch", "tensorflow" or "keras_torch" (Keras 3 on
the PyTorch backend: the parent sets KERAS_BACKEND=torch before Keras is imported here). It reads one JSON command per
line on stdin and answers one JSON line on stdout; nothing else is printed there. Threads are fixed at one in every
runtime, so the runtimes compete on the same footing on a CPU.

This is lesson tooling, not grading: the times are this process's own clock, which is what a benchmark notebook
would read too. The parent interleaves the processes round by round, so a busy second hits every mode alike.
"""
from __future__ import annotations

import gc
import json
import os
import re
import statistics
import sys
import time

import numpy as np

from autograder.worker._steps import keras_tape_step

GROUP = sys.argv[1] if __name__ == "__main__" else ""
CLASSES = 10
IMAGE = 8  # 8×8 images, as the capstone's digits
NAIVE_CALLS = 10  # what a naive benchmark reports: the mean of the first calls, the compile included


def flops_per_step(batch: int, width: int) -> float:
    """Multiply-adds ×2 of the forward pass, ×3 for forward and backward: the work a step must do."""
    pixels = IMAGE * IMAGE
    forward = 2 * batch * pixels * (width * 9 + width * width * 9) + 2 * batch * pixels * width * CLASSES
    return 3.0 * forward


def _data(batch: int, channels_last: bool):
    r = np.random.default_rng(batch)
    x = r.standard_normal((batch, 1, IMAGE, IMAGE)).astype(np.float32)
    y = r.integers(0, CLASSES, batch).astype(np.int64)
    return (x.transpose(0, 2, 3, 1).copy() if channels_last else x), y


def _status_mb(field: str) -> float:
    """A size from /proc/self/status in MiB: VmRSS (resident now) or VmHWM (its peak)."""
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux ≥ 4.0)
        f.write("5")


class TorchRuntime:
    def __init__(self):
        import logging

        import torch
        torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # Dynamo's notices go to stderr
        torch.set_num_threads(1)
        self.torch = torch
        self.gpu = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.gpu else "cpu")

    def describe(self) -> str:
        return self.torch.cuda.get_device_name(0) if self.gpu else "CPU"

    def threads(self) -> int:
        return self.torch.get_num_threads()

    def sync(self) -> None:
        if self.gpu:
            self.torch.cuda.synchronize()

    def fresh_compiler(self) -> None:
        """Dynamo forgets earlier configurations, so a compiled mode's first call is its own compile, not a guard
        check against a graph compiled for another shape (Inductor's on-disk cache still serves what it holds)."""
        self.torch._dynamo.reset()

    def build(self, mode: str, batch: int, width: int):
        torch, nn = self.torch, self.torch.nn
        self.fresh_compiler()
        model = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                              nn.ReLU(), nn.Flatten(), nn.Linear(IMAGE * IMAGE * width, CLASSES)).to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = (torch.from_numpy(a).to(self.device) for a in _data(batch, channels_last=False))

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()

        if mode == "torch_compile":  # the whole step, as tf.function takes the whole step: forward, backward, Adam
            step = torch.compile(step, dynamic=False)
        return lambda: step(x, y)

    def reset_peak(self) -> None:
        if self.gpu:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.gpu else _status_mb("VmHWM")


class TensorFlowRuntime:
    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        tf.get_logger().setLevel("ERROR")
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras  # noqa: F401  (imported now, so its import is not counted in a mode's memory)
        self.tf = tf
        self.gpu = bool(tf.config.list_physical_devices("GPU"))

    def describe(self) -> str:
        if not self.gpu:
            return "CPU"
        tf = self.tf
        return tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get("device_name",
                                                                                                         "GPU")

    def threads(self) -> int:
        return self.tf.config.threading.get_intra_op_parallelism_threads()

    def sync(self) -> None:
        if self.gpu:
            self.tf.test.experimental.sync_devices()

    def build(self, mode: str, batch: int, width: int):
        import keras
        tf = self.tf
        model = _keras_model(keras, width)
        x, y = (tf.constant(a) for a in _data(batch, channels_last=True))
        if mode.startswith("keras_tf"):
            return _keras_trainer(keras, model, mode.endswith("graph"), x, y)
        step = keras_tape_step(tf, model, keras.optimizers.Adam(learning_rate=1e-3),
                               keras.losses.SparseCategoricalCrossentropy(from_logits=True), mode)
        return lambda: step(x, y)

    def reset_peak(self) -> None:
        if self.gpu:
            self.tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mb(self) -> float:
        if self.gpu:
            return self.tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        return _status_mb("VmHWM")


class KerasTorchRuntime(TorchRuntime):
    """Keras 3 on the PyTorch backend: Keras's front-end (layers, trainer, optimizer) over PyTorch's runtime."""

    def __init__(self):
        super().__init__()
        import keras  # noqa: F401  (imported now, so its import is not counted in a mode's memory)

    def build(self, mode: str, batch: int, width: int):
        import keras
        assert keras.backend.backend() == "torch", keras.backend.backend()
        self.fresh_compiler()
        x, y = _data(batch, channels_last=True)
        x, y = (self.torch.from_numpy(a).to(self.device) for a in (x, y))
        return _keras_trainer(keras, _keras_model(keras, width), mode.endswith("compile"), x, y)


def _keras_model(keras, width: int):
    return keras.Sequential([keras.Input((IMAGE, IMAGE, 1)),
                             keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                             keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(CLASSES)])


def _keras_trainer(keras, model, compiled: bool, x, y):
    """Keras's own trainer: train_on_batch runs model.train_step, eagerly or compiled by the backend (a tf.function
    on TensorFlow, torch.compile on PyTorch): the same front-end either way."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=not compiled, jit_compile=False if keras.backend.backend() == "tensorflow" else compiled)
    return lambda: model.train_on_batch(x, y)


RUNTIMES = {"torch": TorchRuntime, "tensorflow": TensorFlowRuntime, "keras_torch": KerasTorchRuntime}


def serve(group: str) -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the answers
    runtime = RUNTIMES[group]()
    steps: dict[str, object] = {}

    def answer(**fields) -> None:
        out.write(json.dumps(fields) + "\n")
        out.flush()

    # On a CPU, with a process per mode ("process"), a mode's memory is this process's peak RSS above what it held
    # once the framework was imported; configurations run from small to large, so the peak so far is the current
    # one's. Sharing the process with other modes ("build"), it is the RSS growth from the build to the warm-up's
    # end, which misses memory that an earlier mode's allocations left in the allocator. On a GPU the allocator's
    # own peak is reset before each build.
    imported_mb = _status_mb("VmRSS")
    answer(ready=group, device=runtime.describe(), threads=runtime.threads(), pid=os.getpid())
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["do"] == "build":  # build, then the first call (trace, compile) and warm-ups, timed apart
                gc.collect()
                runtime.reset_peak()
                if runtime.gpu:
                    base = 0.0
                elif cmd.get("memory") == "process":
                    base = imported_mb
                else:
                    _reset_peak_rss()
                    base = _status_mb("VmRSS")
                steps[cmd["mode"]] = step = runtime.build(cmd["mode"], cmd["batch"], cmd["width"])
                t0 = time.perf_counter()
                step()
                runtime.sync()
                first = time.perf_counter() - t0
                warm = []
                for _ in range(cmd["warmup"]):
                    t0 = time.perf_counter()
                    step()
                    runtime.sync()
                    warm.append(time.perf_counter() - t0)
                answer(first_s=first, naive_s=(first + sum(warm[:NAIVE_CALLS - 1])) / NAIVE_CALLS,
                       warm_s=statistics.median(warm), peak_mb=max(runtime.peak_mb() - base, 0.0))
            elif cmd["do"] == "sample":  # `steps` back-to-back steps, one clock reading around them
                step = steps[cmd["mode"]]
                runtime.sync()
                t0 = time.perf_counter()
                for _ in range(cmd["steps"]):
                    step()
                runtime.sync()
                answer(seconds=time.perf_counter() - t0)
            elif cmd["do"] == "drop":
                steps.pop(cmd["mode"], None)
                gc.collect()
                answer(dropped=cmd["mode"])
        except Exception as e:  # the parent names the mode and the configuration
            answer(error=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:400])


if __name__ == "__main__":
    serve(GROUP)
