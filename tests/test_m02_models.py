"""Module 02: the usual porting mistakes fail with a message that names them; other correct ports pass."""
import pytest

from autograder import run_check
from conftest import notebook_with

pytestmark = pytest.mark.slow

# Notebook A: numbers copied across without translating them, and two layout slips.
WRONG_A = {
    # Keras's momentum pasted into PyTorch (where it is the weight of the NEW batch)
    "make_torch_bn_like_keras": '''
def make_torch_bn_like_keras(num_features):
    return nn.BatchNorm2d(num_features, momentum=0.99, eps=1e-3)
''',
    # BatchNorm defaults left as Keras has them
    "make_keras_cnn": '''
def make_keras_cnn():
    return keras_cnn()
''',
    # the conv kernel "transposed" with .T: right shape, height and width swapped
    "torch_to_keras": '''
def torch_to_keras(torch_model, keras_model):
    sd = {name: t.detach().cpu().numpy() for name, t in torch_model.state_dict().items()}
    fc1 = np.transpose(sd["fc1.weight"].reshape(16, 4, 4, 4), (2, 3, 1, 0)).reshape(64, 16)
    keras_model.set_weights([sd["conv.weight"].T, sd["conv.bias"], sd["bn.weight"], sd["bn.bias"],
                             sd["bn.running_mean"], sd["bn.running_var"], fc1, sd["fc1.bias"],
                             sd["fc2.weight"].T, sd["fc2.bias"]])
    return keras_model
''',
    # the flatten-order permutation of fc1 forgotten: a plain transpose
    "keras_to_torch": '''
def keras_to_torch(keras_model, torch_model):
    (kernel, conv_b, gamma, beta, mean, var, k1, b1, k2, b2) = keras_model.get_weights()
    state = torch_model.state_dict()
    new = {"conv.weight": kernel.transpose(3, 2, 0, 1), "conv.bias": conv_b, "bn.weight": gamma, "bn.bias": beta,
           "bn.running_mean": mean, "bn.running_var": var, "fc1.weight": k1.T, "fc1.bias": b1,
           "fc2.weight": k2.T, "fc2.bias": b2}
    state.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in new.items()})
    torch_model.load_state_dict(state)
    return torch_model
''',
}

# Notebook B: defaults left in PyTorch, half the Keras config, statistics not copied, a Dense kernel not
# transposed, and a loss on probabilities.
WRONG_B = {
    "make_torch_bn_like_keras": '''
def make_torch_bn_like_keras(num_features):
    return nn.BatchNorm2d(num_features)
''',
    "make_keras_cnn": '''
def make_keras_cnn():
    return keras_cnn(momentum=0.9)
''',
    # gamma and beta copied, the running statistics forgotten
    "torch_to_keras": '''
def torch_to_keras(torch_model, keras_model):
    sd = {name: t.detach().cpu().numpy() for name, t in torch_model.state_dict().items()}
    fc1 = np.transpose(sd["fc1.weight"].reshape(16, 4, 4, 4), (2, 3, 1, 0)).reshape(64, 16)
    keras_model.get_layer("conv").set_weights([np.transpose(sd["conv.weight"], (2, 3, 1, 0)), sd["conv.bias"]])
    bn = keras_model.get_layer("bn")
    bn.gamma.assign(sd["bn.weight"])
    bn.beta.assign(sd["bn.bias"])
    keras_model.get_layer("fc1").set_weights([fc1, sd["fc1.bias"]])
    keras_model.get_layer("fc2").set_weights([sd["fc2.weight"].T, sd["fc2.bias"]])
    return keras_model
''',
    # Dense kernels copied without a transpose
    "keras_to_torch": '''
def keras_to_torch(keras_model, torch_model):
    (kernel, conv_b, gamma, beta, mean, var, k1, b1, k2, b2) = keras_model.get_weights()
    k1 = k1.reshape(4, 4, 4, 16).transpose(2, 0, 1, 3).reshape(64, 16)
    state = torch_model.state_dict()
    new = {"conv.weight": kernel.transpose(3, 2, 0, 1), "conv.bias": conv_b, "bn.weight": gamma, "bn.bias": beta,
           "bn.running_mean": mean, "bn.running_var": var, "fc1.weight": k1, "fc1.bias": b1,
           "fc2.weight": k2, "fc2.bias": b2}
    state.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in new.items()})
    torch_model.load_state_dict(state)
    return torch_model
''',
    # the loss computed as if the model returned probabilities
    "keras_train_step": '''
def keras_train_step(model, x, y, lr):
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
        v.assign_sub(lr * g)
    return loss
''',
}

# Correct alternatives: attributes set after construction, per-layer assign with torch's permute, copy_ under
# no_grad instead of load_state_dict, and a Keras optimiser instead of assign_sub.
ALTERNATIVES = {
    "make_torch_bn_like_keras": '''
def make_torch_bn_like_keras(num_features):
    bn = nn.BatchNorm2d(num_features)
    bn.momentum = 1 - 0.99   # Keras's momentum is the weight of the old value
    bn.eps = 1e-3
    return bn
''',
    "make_keras_cnn": '''
def make_keras_cnn():
    model = keras_cnn()
    bn = model.get_layer("bn")
    bn.momentum, bn.epsilon = 0.9, 1e-5
    return model
''',
    "torch_to_keras": '''
def torch_to_keras(torch_model, keras_model):
    m = torch_model
    conv, bn = keras_model.get_layer("conv"), keras_model.get_layer("bn")
    with torch.no_grad():
        conv.kernel.assign(m.conv.weight.permute(2, 3, 1, 0).cpu().numpy())
        conv.bias.assign(m.conv.bias.cpu().numpy())
        for var, t in ((bn.gamma, m.bn.weight), (bn.beta, m.bn.bias), (bn.moving_mean, m.bn.running_mean),
                       (bn.moving_variance, m.bn.running_var)):
            var.assign(t.cpu().numpy())
        w1 = m.fc1.weight.view(16, 4, 4, 4).permute(2, 3, 1, 0).reshape(64, 16)
        keras_model.get_layer("fc1").kernel.assign(w1.cpu().numpy())
        keras_model.get_layer("fc1").bias.assign(m.fc1.bias.cpu().numpy())
        keras_model.get_layer("fc2").kernel.assign(m.fc2.weight.T.cpu().numpy())
        keras_model.get_layer("fc2").bias.assign(m.fc2.bias.cpu().numpy())
    return keras_model
''',
    "keras_to_torch": '''
def keras_to_torch(keras_model, torch_model):
    def t(v):
        return torch.as_tensor(np.asarray(v))
    conv, bn = keras_model.get_layer("conv"), keras_model.get_layer("bn")
    fc1, fc2 = keras_model.get_layer("fc1"), keras_model.get_layer("fc2")
    m = torch_model
    with torch.no_grad():
        m.conv.weight.copy_(t(conv.kernel).permute(3, 2, 0, 1))
        m.conv.bias.copy_(t(conv.bias))
        m.bn.weight.copy_(t(bn.gamma))
        m.bn.bias.copy_(t(bn.beta))
        m.bn.running_mean.copy_(t(bn.moving_mean))
        m.bn.running_var.copy_(t(bn.moving_variance))
        # (H*W*C, out) -> (out, H, W, C) -> (out, C, H, W) -> (out, C*H*W)
        m.fc1.weight.copy_(t(fc1.kernel).T.reshape(16, 4, 4, 4).permute(0, 3, 1, 2).reshape(16, 64))
        m.fc1.bias.copy_(t(fc1.bias))
        m.fc2.weight.copy_(t(fc2.kernel).T)
        m.fc2.bias.copy_(t(fc2.bias))
    return m
''',
    "keras_train_step": '''
def keras_train_step(model, x, y, lr):
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss
''',
}


def _messages(course, zygote, tmp_path, replacements, name):
    module = course.module("02_models")
    nb = notebook_with(module.solution, replacements, tmp_path / f"{name}.ipynb")
    result = run_check("02_models", notebook=nb, course=course, zygote=zygote)
    return result, {p.id: p.message for p in result.parts}


def test_numbers_copied_across_untranslated_and_layout_slips_fail_with_the_mistake_named(course, tmp_path, zygote):
    result, msg = _messages(course, zygote, tmp_path, WRONG_A, "wrong_a")
    assert result.score == 0, result.summary()
    assert "weight of 0.99 on the new batch, expected 0.01" in msg["torch_bn"], msg["torch_bn"]
    assert "torch momentum m is Keras momentum 1 - m" in msg["torch_bn"]
    # BN defaults left as Keras has them: the running statistics give it away, in Part 2 and in the training step
    assert "[BN running mean]" in msg["keras_twin"], msg["keras_twin"]
    assert "weight of 0.01 on the new batch, expected 0.1" in msg["keras_twin"]
    assert "[BN running mean]" in msg["train_step"] and "expected 0.1" in msg["train_step"], msg["train_step"]
    assert "[logits]" in msg["torch_to_keras"] and "reversed with .T" in msg["torch_to_keras"], msg["torch_to_keras"]
    assert "permute(2, 3, 1, 0)" in msg["torch_to_keras"]
    assert "flatten order" in msg["keras_to_torch"] and "(C, H, W)" in msg["keras_to_torch"], msg["keras_to_torch"]


def test_defaults_missing_statistics_untransposed_dense_and_probabilities_fail_with_the_mistake_named(course, tmp_path,
                                                                                                     zygote):
    result, msg = _messages(course, zygote, tmp_path, WRONG_B, "wrong_b")
    assert result.score == 0, result.summary()
    assert "weight of 0.1 on the new batch, expected 0.01" in msg["torch_bn"], msg["torch_bn"]
    assert "[logits]" in msg["keras_twin"] and "epsilon" in msg["keras_twin"] and "1e-5" in msg["keras_twin"]
    assert "running mean and variance were not copied" in msg["torch_to_keras"], msg["torch_to_keras"]
    assert msg["keras_to_torch"].startswith("keras_to_torch raised RuntimeError: size mismatch"), \
        msg["keras_to_torch"]
    assert "Dense.kernel is (in, out)" in msg["keras_to_torch"]
    assert "[loss]" in msg["train_step"] and "from_logits=True" in msg["train_step"], msg["train_step"]


def test_correct_alternative_answers_pass(course, tmp_path, zygote):
    result, msg = _messages(course, zygote, tmp_path, ALTERNATIVES, "alternatives")
    assert result.passed, result.summary()
