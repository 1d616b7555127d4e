"""Module 09's grader code in the workers: the student's models, port and training loops called on the grader's
weights and digits, the student's benchmark on the grader's modes, and the grader's own training steps that the
parent times in the reference worker.

Comparisons run in full float32: TF32 (the default for convolutions on recent GPUs, and for TensorFlow's matmuls)
rounds to ~1e-3, so each function that runs a model turns it off first.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

TORCH_SHAPES = [(8, 1, 3, 3), (8,), (10, 512), (10,)]
TORCH_MODES = ("torch_eager", "torchscript")
_STEPS = {}   # (mode, batch size) -> a prepared training step of the grader's own model (timed_setup)


def _full_float32_torch():
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def _full_float32_tf():
    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf


def _device() -> str:
    from autograder.worker import device
    return device()


def _torch_cnn(student, params):
    """The student's build_torch_cnn(), checked for the right parameters, holding the grader's `params`, on the
    worker's device."""
    torch = _full_float32_torch()
    model = student.build_torch_cnn()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_torch_cnn returned a {type(model).__name__}, not a torch.nn.Module")
    shapes = [tuple(p.shape) for p in model.parameters()]
    if shapes != TORCH_SHAPES:
        raise ValueError(f"build_torch_cnn() has parameters of shapes {shapes}, expected {TORCH_SHAPES}: "
                         f"Conv2d(1, 8, 3, padding=1) then Linear(512, 10)")
    model = model.to(_device())
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(torch.as_tensor(v))
    return model


def _keras_cnn(student):
    import keras
    model = student.build_keras_cnn()
    if not isinstance(model, keras.Model):
        raise TypeError(f"build_keras_cnn returned a {type(model).__name__}, not a keras.Model")
    return model


def _losses(losses, fn: str, hint: str = "") -> np.ndarray:
    try:
        values = [float(v) for v in losses]
    except (TypeError, ValueError):
        raise TypeError(f"{fn} returned a {type(losses).__name__}; return the mean loss of each epoch "
                        f"as a list of floats{hint}") from None
    return np.array(values, dtype=np.float64)


# -- part 1: the port ---------------------------------------------------------------------------------------
def port(student, x, *params):
    """The student's two models, the PyTorch one holding the parent's weights, ported by port_weights: both
    logits on the parent's digits (NCHW for PyTorch, NHWC for Keras)."""
    import keras
    torch, tf = _full_float32_torch(), _full_float32_tf()
    torch_model = _torch_cnn(student, params)
    keras_model = _keras_cnn(student)
    returned = student.port_weights(torch_model, keras_model)
    if isinstance(returned, keras.Model):
        keras_model = returned
    torch_model.eval()
    with torch.no_grad():
        torch_logits = torch_model(x)
    x_nhwc = tf.constant(np.ascontiguousarray(np.transpose(x.detach().cpu().numpy(), (0, 2, 3, 1))))
    return torch_logits, keras_model(x_nhwc, training=False)


# -- part 2: training ---------------------------------------------------------------------------------------
def torch_train(student, x, y, x_test, epochs, batch_size, lr, *params):
    """The student's model with the grader's weights, trained by train_torch: its losses and test logits."""
    torch = _full_float32_torch()
    model = _torch_cnn(student, params)
    losses = _losses(student.train_torch(model, x, y, int(epochs), int(batch_size), float(lr)), "train_torch")
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
    return losses, logits


def keras_train(student, x, y, x_test, epochs, batch_size, lr, *params):
    """The student's Keras model with the grader's weights (Keras layout), trained by train_keras."""
    _full_float32_tf()
    model = _keras_cnn(student)
    model.set_weights([np.asarray(p) for p in params])
    losses = student.train_keras(model, x, y, int(epochs), int(batch_size), float(lr))
    losses = _losses(losses, "train_keras", " (model.fit's history.history['loss'] is one)")
    return losses, model(x_test, training=False)


# -- parts 3-4: the benchmark -------------------------------------------------------------------------------
def benchmark(student, modes, batch_size, steps, warmup):
    """The student's benchmark_step on the grader's modes: the seconds per step, in the order asked for."""
    modes = modes.split(",")
    for framework, full_float32 in (("torch", _full_float32_torch), ("tensorflow", _full_float32_tf)):
        if framework in sys.modules:  # as when the grader's own steps are timed
            full_float32()
    result = student.benchmark_step(list(modes), int(batch_size), int(steps), int(warmup))
    if not isinstance(result, dict):
        raise TypeError(f"benchmark_step returned a {type(result).__name__}, expected a dict {{mode: seconds}}")
    missing = [m for m in modes if m not in result]
    if missing:
        raise KeyError(f"benchmark_step({modes}) returned no time for {missing}; its keys are {sorted(result)}")
    return np.array([float(result[m]) for m in modes], dtype=np.float64)


def _torch_step(mode: str, batch_size: int):
    import torch

    from autograder.datasets import digits
    _full_float32_torch()
    dev = _device()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(512, 10)).to(dev)
    if mode == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.jit.script(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step, [torch.as_tensor(a, device=dev) for a in digits(batch_size, seed=0)]


def _tf_step(mode: str, batch_size: int):
    import keras

    from autograder.datasets import digits
    from autograder.worker._steps import keras_tape_step
    tf = _full_float32_tf()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    opt = keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-8)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step = keras_tape_step(tf, model, opt, loss_fn, mode)
    return step, [tf.constant(a) for a in digits(batch_size, seed=0, channels_last=True)]


def timed_setup(student, mode, batch_size):
    """The grader's own training step of `mode` at `batch_size`, built and warmed up (tracing, compiling) in the
    reference worker before the parent times it."""
    batch_size = int(batch_size)
    step, args = (_torch_step if mode in TORCH_MODES else _tf_step)(mode, batch_size)
    for _ in range(5):
        step(*args)
    _STEPS[mode, batch_size] = step


def timed_step(student, mode, batch_size, x, y):
    """One step of the prepared (mode, batch size), on the parent's inputs: what time_reference times."""
    return _STEPS[mode, int(batch_size)](x, y)
