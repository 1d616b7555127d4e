"""What an exercise's checks are written with: the public API for course authors.

An exercise is three files named alike: its notebook pair (solutions/, lessons/), its checks in
`autograder/exercises/mNN_topic.py`, and the grader code that runs beside the notebook in
`autograder/worker/mNN_topic.py` (see autograder.worker). The checks module holds `PARTS = {part id: check}`; each
check is a plain function of a `Context`:

    def matches(ctx):
        x = ctx.rng.normal(size=(8, 3)).astype(np.float32)          # the parent draws the inputs
        got, want = ctx.call_both("torch_softmax", [x], "torch")      # the student's and the reference's answers
        ctx.same(got, want, "torch", ["probabilities"], "torch_softmax")
        return "matches the reference"                                 # the message of a pass

A check fails by raising `Mismatch` (or `ctx.fail(message)`) with one sentence that teaches. Grader code in the
worker is called as "@name" (`ctx.call("@port", args, "torch", blame="port_weights")`); `blame` names the student
function it stands for, in any error. Timed parts use `ctx.speedup` or `ctx.time_reference`, which keep the
clock in this process. Specs import from here only, never from the private modules.
"""
from autograder._compare import Mismatch, bad_file, compare, leaves, tensor
from autograder._context import Context, GraderError, NeedsReference
from autograder._sandbox import exclusive_timing
from autograder.datasets import digits

__all__ = ["Context", "GraderError", "Mismatch", "NeedsReference", "bad_file", "compare", "digits", "exclusive_timing",
           "leaves", "tensor"]
