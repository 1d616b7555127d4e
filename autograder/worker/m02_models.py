"""Module 02's grader code in the workers: the grader's own copies of the CNN in both frameworks, and functions that
build a model from the parent's arrays, call the student's code on it and return plain tensors for the parent to
judge against its float64 NumPy truth."""
from __future__ import annotations

import numpy as np

from autograder.worker import device

# The state_dict names of TorchCNN in the order the parent sends the weights (PyTorch's layout).
TORCH_NAMES = ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
_CLASSES: dict = {}  # the grader's TorchCNN class, made once torch is imported


def _torch():
    import torch
    # Compare in full float32: TF32 tensor cores (the default for convolutions on recent GPUs) round to ~1e-3.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def _tf():
    import keras
    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(False)  # full float32 on GPUs too
    return tf, keras


def _numpy(t) -> np.ndarray:
    torch = _torch()
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _torch_cnn_class():
    """The grader's copy of TorchCNN: NCHW (N, 3, 8, 8) -> logits (N, 5)."""
    if "TorchCNN" not in _CLASSES:
        torch = _torch()

        class TorchCNN(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
                self.bn = torch.nn.BatchNorm2d(4)
                self.fc1 = torch.nn.Linear(4 * 4 * 4, 16)
                self.fc2 = torch.nn.Linear(16, 5)

            def forward(self, x):
                x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
                x = torch.flatten(x, 1)
                return self.fc2(torch.relu(self.fc1(x)))

        _CLASSES["TorchCNN"] = TorchCNN
    return _CLASSES["TorchCNN"]


def _torch_cnn(params):
    torch = _torch()
    model = _torch_cnn_class()()
    state = model.state_dict()
    with torch.no_grad():
        for name, p in zip(TORCH_NAMES, params):
            state[name].copy_(torch.as_tensor(_numpy(p)))
    return model.to(device())


def _keras_cnn(momentum=0.99, epsilon=1e-3):
    """The grader's copy of keras_cnn: NHWC (N, 8, 8, 3) -> logits (N, 5)."""
    _, keras = _tf()
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name="bn"),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dense(5, name="fc2"),
    ])


def _keras_bn_stats(model):
    tf, keras = _tf()
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if len(bns) != 1:
        raise ValueError(f"the Keras model has {len(bns)} BatchNormalization layers, expected 1")
    return tf.convert_to_tensor(bns[0].moving_mean), tf.convert_to_tensor(bns[0].moving_variance)


def _student_keras_cnn(student, params):
    """The student's make_keras_cnn(), checked to be a Keras model, with the parent's weights (Keras layout)."""
    _, keras = _tf()
    model = student.make_keras_cnn()
    if not isinstance(model, keras.Model):
        raise TypeError(f"make_keras_cnn returned a {type(model).__name__}, not a keras.Model")
    try:
        model.set_weights([np.asarray(p) for p in params])
    except ValueError as e:  # said here, since another of the student's functions may be the one blamed
        raise ValueError(f"make_keras_cnn's model does not take keras_cnn's weights: {e}") from None
    return model


def bn_like_keras(student, x, training, gamma, beta, mean, var):
    """Part 1: the student's BatchNorm2d, given the parent's statistics, on x; output and running statistics."""
    torch = _torch()
    bn = student.make_torch_bn_like_keras(x.shape[1])
    if not isinstance(bn, torch.nn.Module):
        raise TypeError(f"make_torch_bn_like_keras returned a {type(bn).__name__}, not a torch.nn.Module")
    bn = bn.to(x.device)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    bn.train(bool(training))
    with torch.no_grad():
        y = bn(x)
    return y, bn.running_mean.clone(), bn.running_var.clone()


def keras_twin(student, x, training, *params):
    """Part 2: the student's make_keras_cnn(), given the parent's weights in Keras layout, on NHWC x."""
    model = _student_keras_cnn(student, params)
    out = model(x, training=bool(training))
    return (out, *_keras_bn_stats(model))


def to_keras(student, x, training, *params):
    """Part 3: the grader's TorchCNN with the parent's weights, ported by the student's torch_to_keras into the
    grader's Keras twin (BN configured like PyTorch's); the Keras model on x (given NCHW, fed NHWC)."""
    tf, keras = _tf()
    torch_model = _torch_cnn(params)
    keras_model = _keras_cnn(momentum=0.9, epsilon=1e-5)
    returned = student.torch_to_keras(torch_model, keras_model)
    if isinstance(returned, keras.Model):
        keras_model = returned
    out = keras_model(tf.constant(np.transpose(_numpy(x), (0, 2, 3, 1))), training=bool(training))
    return (out, *_keras_bn_stats(keras_model))


def to_torch(student, x, training, *params):
    """Part 4: the grader's Keras twin with the parent's weights (Keras layout), ported by the student's
    keras_to_torch into the grader's TorchCNN; the PyTorch model on x (NCHW)."""
    torch = _torch()
    keras_model = _keras_cnn(momentum=0.9, epsilon=1e-5)
    keras_model.set_weights([np.asarray(p) for p in params])
    torch_model = _torch_cnn_class()().to(device())
    returned = student.keras_to_torch(keras_model, torch_model)
    if isinstance(returned, torch.nn.Module):
        torch_model = returned
    torch_model.train(bool(training))
    with torch.no_grad():
        out = torch_model(torch.as_tensor(np.asarray(x), device=device()))
    return out, torch_model.bn.running_mean.clone(), torch_model.bn.running_var.clone()


def keras_train(student, x, y, x2, lr, *params):
    """Part 5: the student's make_keras_cnn() with the parent's weights (Keras layout), one step of the student's
    keras_train_step on NHWC (x, y); the loss, the BN moving statistics and the eval logits on NHWC x2."""
    tf, _ = _tf()
    model = _student_keras_cnn(student, params)
    loss = student.keras_train_step(model, x, y, lr)
    mean, var = _keras_bn_stats(model)
    return tf.convert_to_tensor(loss), mean, var, model(x2, training=False)


def torch_train_reference(student, x, y, x2, lr, *params):
    """Part 5's truth, run in the reference worker: one SGD step of the grader's TorchCNN on (x, y).
    Returns the loss, the running mean, the running variance by Keras's rule (biased batch variance,
    momentum 0.1 in PyTorch's sense), and the eval-mode logits on x2 after the step with that variance."""
    torch = _torch()
    model = _torch_cnn(params)
    old_var = model.bn.running_var.clone()
    with torch.no_grad():
        batch_var = model.conv(x).var(dim=(0, 2, 3), unbiased=False)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    keras_rule_var = 0.9 * old_var + 0.1 * batch_var
    model.eval()
    with torch.no_grad():
        model.bn.running_var.copy_(keras_rule_var)  # the Keras port's statistics, so eval mode compares like for like
        logits2 = model(x2)
    return loss.detach(), model.bn.running_mean.clone(), keras_rule_var, logits2
