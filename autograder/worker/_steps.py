"""Training steps shared by the grader's 09 worker and the capstone showdown (autograder.showdown_worker)."""
from __future__ import annotations


def keras_tape_step(tf, model, opt, loss_fn, mode: str):
    """One optimizer step of a Keras model with a GradientTape, returning the loss: as it is for "tf_eager", as a
    tf.function for "tf_function", compiled by XLA for "tf_xla"."""
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss
    return step if mode == "tf_eager" else tf.function(step, jit_compile=(mode == "tf_xla"))
