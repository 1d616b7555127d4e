"""Grader code that runs inside a worker, beside a notebook's code: one module per exercise, named as its spec
(autograder/worker/m09_capstone.py for autograder/exercises/m09_capstone.py).

A spec calls these functions by name with an "@": `ctx.call("@port", [x, seed], "torch", blame="port_weights")`.
Each is called as `fn(student, *bind, *args)`:

- `student` is the notebook seen one name at a time (`student.build_torch_cnn()`); it is not the notebook's
  globals, so nothing the notebook defines (`import torch as th`, its own `np` or `_clash_x`) can shadow the
  grader's names, and the grader's names never leak into the notebook. A name the notebook lacks raises
  "NAME is not defined", reported as the student's error.
- `bind` are fixed leading arguments of a request (which prepared step to run); `args` are the spec's inputs,
  converted to the request's framework (NumPy arrays become torch or TensorFlow tensors on the worker's device).

An error raised here names the student's function: the one the traceback ends in, or else the request's `blame`.
Raise with a sentence that teaches ("build_torch_cnn returned a list, not a torch.nn.Module").

The worker may hold only one framework (`clash check --framework torch`; the GPU image has no TensorFlow): import
torch, tensorflow and keras inside the functions that use them, never at the top of a module. Nothing here is
trusted: the student's code runs in the same process and could patch it. These functions only compute; the parent
draws the inputs, keeps the clock and judges.
"""
from __future__ import annotations

__all__ = ["device"]


def device() -> str:
    """"cuda" or "cpu": where this worker puts tensors (the harness decided it at start-up)."""
    from autograder import _harness
    return _harness._DEVICE
