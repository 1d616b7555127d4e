"""Module 07's evidence comes from outside the student's process (issue 12): each attack that forged a part when the
grader trusted numbers the notebook's process reported now scores 0 on that part. The controls are the solution
(test_integrity) and the correct alternatives (test_m07_performance), which pass every part.

- timer: read the workload's own cost (`fn.base_s * 1.03`) and set `fn.calls`, after calling fn just enough times
  untimed. The workload now has no cost to read (the parent paces each call over a FIFO and counts them), so the
  forger is left with a guess, and the rounds' costs differ ninefold in a random order;
- no_sync_loop: `torch._C.TensorBase.item(loss)` each step, which a counter patched into torch.Tensor missed. The loop
  is now recorded op by op for a verifier, where a read on the host fails; hidden from the recording on real
  tensors, it meets the recording on fake tensors, which have no value to read (and which records the read);
- torch_mixed, keras_mixed: float32 steps whose logits are cast to bfloat16 at the end (the labels the old hooks and
  compute dtypes reported). Their logits on the grader's probe batch follow float32 arithmetic, not bfloat16's.
"""
import pytest

from autograder import run_check

from conftest import notebook_with, parts

pytestmark = pytest.mark.slow


def loop_that(does: str, preamble: str = "") -> str:
    """A train_steps answer, right but for `does` (indented lines) after each optimizer step."""
    return preamble + '''
def train_steps(model, optimizer, batches):
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
''' + does + '''
        losses.append(loss.detach())
    return torch.stack(losses)
'''


M = "07_performance"

FORGED = {
    "time_call": '''
def time_call(fn, args, warmup, repeats):
    for _ in range(warmup + repeats):   # enough calls for a counter, none of them timed
        fn(*args)
    fn.calls = warmup + repeats
    return getattr(fn, "base_s", 0.015) * 1.03
''',
    # a sync that no patched torch.Tensor.item sees
    "train_steps": loop_that("        torch._C.TensorBase.item(loss)"),
    "autocast_step": '''
def autocast_step(model, optimizer, scaler, x, y):
    optimizer.zero_grad()
    logits = model(x)                                   # float32 arithmetic
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    low = torch.float16 if x.device.type == "cuda" else torch.bfloat16
    return logits.detach().to(low), loss.detach()       # a low-precision label on float32 values
''',
    "keras_mixed_step": '''
def keras_mixed_step(make_model, x, y, lr, policy):
    model = make_model()                                # built under float32: the layers compute in float32
    optimizer = tf.keras.optimizers.SGD(lr)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return tf.cast(logits, tf.bfloat16), loss           # a low-precision label on float32 values
''',
}

# The same read, hidden from the grader's recording on real tensors (its dispatch modes switched off around it), the
# loss only printed. The second recording is on fake tensors, which have no value to read.
HIDDEN = loop_that("""        with _disable_current_modes():
            print(torch._C.TensorBase.item(loss))""",
                  "from torch.utils._python_dispatch import _disable_current_modes\n")


def test_forged_evidence_scores_zero(course, tmp_path, zygote):
    nb = notebook_with(course.module(M).solution, FORGED, tmp_path / "forged.ipynb")
    result = parts(run_check(M, notebook=nb, course=course, zygote=zygote))
    for pid in ("timer", "no_sync_loop", "torch_mixed", "keras_mixed"):
        assert result[pid].status == "failed" and result[pid].points == 0, (pid, result[pid].message)
    assert "but the steady state takes" in result["timer"].message, result["timer"].message
    assert "read a tensor's value on the host" in result["no_sync_loop"].message, result["no_sync_loop"].message
    for pid in ("torch_mixed", "keras_mixed"):
        assert "follow float32 arithmetic, not bfloat16" in result[pid].message, result[pid].message


def test_a_host_read_hidden_from_the_recording_still_fails(course, tmp_path, zygote):
    nb = notebook_with(course.module(M).solution, {"train_steps": HIDDEN}, tmp_path / "hidden.ipynb")
    (part,) = run_check(f"{M}.no_sync_loop", notebook=nb, framework="torch", course=course, zygote=zygote).parts
    assert part.status == "failed" and part.points == 0, part.message
    assert "train_steps made the host wait for the device inside the loop" in part.message, part.message


# torch.nonzero copies its result's size to the host: a sync that reads no value. Once seen only on a GPU (by
# torch.cuda.set_sync_debug_mode in the student's process), it is now read from the recorded graph by the verifier.
NONZERO_EACH_STEP = loop_that("        wrong = torch.nonzero(model(x).argmax(1) != y)")


def test_a_sync_that_reads_no_value_is_read_from_the_graph(course, tmp_path, zygote):
    nb = notebook_with(course.module(M).solution, {"train_steps": NONZERO_EACH_STEP}, tmp_path / "nonzero.ipynb")
    (part,) = run_check(f"{M}.no_sync_loop", notebook=nb, framework="torch", course=course, zygote=zygote).parts
    assert part.status == "failed" and part.points == 0, part.message
    assert "its graph calls aten.nonzero x" in part.message, part.message
