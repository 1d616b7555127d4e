"""Timing with no forward channel (issue 12): a notebook that patches the harness to get ahead of the parent's clock
scores 0 on the timed part, and the same slow code without the patch is the control.

Each attack keeps `tf_loss_and_grad_graph` eager (as slow as the baseline) and patches the worker's request handler
(autograder._harness._answer), which student code can reach in its own process:
- precompute: compute every timed output when the inputs are loaded, before the clock (the attack that passed 01
  `graph_speed` at 23x); the inputs now travel in the timed request itself, so there is nothing to precompute from;
- lazy: answer a timed request at once, with made-up digests, and compute the outputs only when they are fetched;
- stale: answer with the reply to an earlier request (the nonce of another request).
"""
import pytest

from autograder import run_check

from conftest import notebook_with

pytestmark = pytest.mark.slow

M = "01_tensors"
PART = f"{M}.graph_speed"
EAGER = "tf_loss_and_grad_graph = tf_loss_and_grad  # no tf.function: as slow as the baseline\n"

PATCH = '''
import autograder._harness as _harness
_real_answer = _harness._answer
'''

ATTACKS = {
    "precompute": PATCH + '''
_ready = {}

def _answer(req):
    if req.get("op") == "load":      # inputs sent before the clock: compute the outputs now
        reply = _real_answer(req)
        for key in req["items"]:
            _ready[key] = _harness._describe(tf_loss_and_grad(*_harness._LOADED[key]))
        return reply
    if req.get("op") == "run" and all(k in _ready for k in req["ids"]):
        return {"ok": True, "outputs": [_ready[k] for k in req["ids"]]}
    return _real_answer(req)

_harness._answer = _answer
''',
    "lazy": PATCH + '''
_pending = {}

def _answer(req):
    if req.get("op") == "timed" and req.get("keep"):   # the student's side: answer at once, compute later
        _pending.update(req["items"])
        return {"ok": True, "nonce": req["nonce"], "digests": ["0" * 32] * len(req["items"])}
    if req.get("op") == "fetch":
        _real_answer({"op": "timed", "fn": req.get("fn", "tf_loss_and_grad"), "framework": "tensorflow",
                      "nonce": "", "keep": True, "items": {k: _pending[k] for k in req["ids"]}})
    return _real_answer(req)

_harness._answer = _answer
''',
    "stale": PATCH + '''
_last = {"nonce": "none yet"}

def _answer(req):
    reply = _real_answer(req)
    if req.get("op") == "timed":
        reply["nonce"], _last["nonce"] = _last["nonce"], req.get("nonce")
    return reply

_harness._answer = _answer
''',
}

EXPECTED = {
    "precompute": "at least",                 # timed honestly now: as slow as eager, under the threshold
    "lazy": "not those it committed to while timed",
    "stale": "not for that request",
}


def check(course, tmp_path, zygote, source: str):
    module = course.module(M)
    nb = notebook_with(module.solution, {"tf_loss_and_grad_graph": source}, tmp_path / "nb.ipynb")
    (part,) = run_check(PART, notebook=nb, course=course, zygote=zygote).parts
    return part


def test_the_slow_code_fails_without_a_patch(course, tmp_path, zygote):
    part = check(course, tmp_path, zygote, EAGER)
    assert part.status == "failed" and part.points == 0, part.message
    spec = next(p for p in course.module(M).exercise.parts if p.id == "graph_speed")
    assert part.details["ratio"] < spec.threshold("cpu"), part.details


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_harness_patch_that_gets_ahead_of_the_clock_scores_zero(course, tmp_path, zygote, attack):
    part = check(course, tmp_path, zygote, EAGER + ATTACKS[attack])
    assert part.status == "failed" and part.points == 0, part.message
    assert EXPECTED[attack] in part.message, part.message


def test_the_honest_graph_passes_with_its_outputs_verified_after_the_clock(course, tmp_path, zygote):
    part = check(course, tmp_path, zygote, "tf_loss_and_grad_graph = tf.function(tf_loss_and_grad)\n")
    assert part.status == "passed", part.message
