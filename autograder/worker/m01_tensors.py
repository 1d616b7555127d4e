"""Module 01's grader code in the workers: the course's eager baseline for the timed part."""
from __future__ import annotations


def baseline_tf_loss_and_grad(student, w, x, y):
    """The mean squared error of x @ w against y and its gradient, in eager TensorFlow: what a tf.function must beat.
    Runs in the clean reference worker, so the student's process cannot slow it down."""
    import tensorflow as tf
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
    return loss, tape.gradient(loss, w)
