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
    # the attributes set after construction, instead of constructor arguments
    "make_torch_bn_like_keras": '''
def make_torch_bn_like_keras(num_features):
    bn = nn.BatchNorm2d(num_features)
    bn.momentum = 1 - 0.99   # Keras's momentum is the weight of the old value
    bn.eps = 1e-3
    return bn
''',
    # the BN layer's attributes set on a default keras_cnn, instead of keras_cnn's arguments
    "make_keras_cnn": '''
def make_keras_cnn():
    model = keras_cnn()
    bn = model.get_layer("bn")
    bn.momentum, bn.epsilon = 0.9, 1e-5
    return model
''',
    # Variable.assign per weight with torch's permute, instead of one set_weights of NumPy transposes
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
    # Parameter.copy_ under no_grad, instead of load_state_dict
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
    # keras.optimizers.SGD and tf.nn's sparse cross-entropy, instead of assign_sub and a Keras loss object
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

# Another structure: a BatchNorm2d subclass, a Keras config round trip, per-layer helpers with an index permutation
# for fc1, a partial state dict, and the loss and the SGD step as a helper function and a small class.
ALTERNATIVES_STRUCTURE = {
    # a BatchNorm2d subclass that carries Keras's defaults
    "make_torch_bn_like_keras": '''
class KerasDefaultBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d with Keras's BatchNormalization defaults: momentum 0.99 on the old value, epsilon 1e-3."""

    def __init__(self, num_features):
        super().__init__(num_features, eps=1e-3, momentum=0.01)


def make_torch_bn_like_keras(num_features):
    return KerasDefaultBatchNorm2d(num_features)
''',
    # keras_cnn's config edited and the model rebuilt from it, instead of passing arguments
    "make_keras_cnn": '''
def make_keras_cnn():
    config = keras_cnn().get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["momentum"] = 0.9    # PyTorch's 0.1 on the new batch
            layer["config"]["epsilon"] = 1e-5
    return keras.Sequential.from_config(config)
''',
    # one helper per layer kind, set layer by layer; fc1's rows reordered by an index permutation
    "torch_to_keras": '''
def _numpy(t):
    return t.detach().cpu().numpy()


def _conv_to_keras(conv):
    return [_numpy(conv.weight).transpose(2, 3, 1, 0), _numpy(conv.bias)]


def _bn_to_keras(bn):
    return [_numpy(bn.weight), _numpy(bn.bias), _numpy(bn.running_mean), _numpy(bn.running_var)]


def _dense_to_keras(linear, row_order=None):
    kernel = _numpy(linear.weight).T                 # (in, out)
    if row_order is not None:
        kernel = kernel[row_order]
    return [kernel, _numpy(linear.bias)]


# Keras's feature i = (h, w, c) is PyTorch's feature c*16 + h*4 + w.
TORCH_INDEX_OF_KERAS_FEATURE = np.arange(64).reshape(4, 4, 4).transpose(1, 2, 0).reshape(64)


def torch_to_keras(torch_model, keras_model):
    converted = {
        "conv": _conv_to_keras(torch_model.conv),
        "bn": _bn_to_keras(torch_model.bn),
        "fc1": _dense_to_keras(torch_model.fc1, TORCH_INDEX_OF_KERAS_FEATURE),
        "fc2": _dense_to_keras(torch_model.fc2),
    }
    for name, arrays in converted.items():
        keras_model.get_layer(name).set_weights(arrays)
    return keras_model
''',
    # a loop over a name map into a partial state dict (strict=False), fc1's columns gathered by a permutation
    "keras_to_torch": '''
# PyTorch's feature j = (c, h, w) is Keras's feature h*16 + w*4 + c.
KERAS_INDEX_OF_TORCH_FEATURE = np.arange(64).reshape(4, 4, 4).transpose(2, 0, 1).reshape(64)

LAYOUT = {  # Keras weight -> (PyTorch state-dict name, how to convert)
    ("conv", 0): ("conv.weight", lambda a: a.transpose(3, 2, 0, 1)),
    ("conv", 1): ("conv.bias", lambda a: a),
    ("bn", 0): ("bn.weight", lambda a: a),
    ("bn", 1): ("bn.bias", lambda a: a),
    ("bn", 2): ("bn.running_mean", lambda a: a),
    ("bn", 3): ("bn.running_var", lambda a: a),
    ("fc1", 0): ("fc1.weight", lambda a: a[KERAS_INDEX_OF_TORCH_FEATURE].T),
    ("fc1", 1): ("fc1.bias", lambda a: a),
    ("fc2", 0): ("fc2.weight", lambda a: a.T),
    ("fc2", 1): ("fc2.bias", lambda a: a),
}


def keras_to_torch(keras_model, torch_model):
    state = {}
    for (layer, index), (name, convert) in LAYOUT.items():
        array = keras_model.get_layer(layer).get_weights()[index]
        state[name] = torch.tensor(np.ascontiguousarray(convert(array)))
    missing, unexpected = torch_model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return torch_model
''',
    # the loss in a helper and plain SGD as a small class, instead of one function body
    "keras_train_step": '''
def mean_cross_entropy(labels, logits):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


class PlainSGD:
    def __init__(self, lr):
        self.lr = lr

    def apply(self, grads, variables):
        for variable, grad in zip(variables, grads):
            variable.assign_sub(self.lr * grad)


def keras_train_step(model, x, y, lr):
    with tf.GradientTape() as tape:
        loss = mean_cross_entropy(y, model(x, training=True))
    PlainSGD(lr).apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return loss
''',
}

# Another style: named constants and keywords, np.einsum layouts, weights found by variable path, the update with
# Parameter.copy_, the cross-entropy from log_softmax written out, the learning rate cast to each weight's dtype.
ALTERNATIVES_STYLE = {
    # every argument by keyword, the momentum converted from Keras's convention in the open
    "make_torch_bn_like_keras": '''
KERAS_BN_MOMENTUM = 0.99   # Keras: weight of the OLD running value
KERAS_BN_EPSILON = 1e-3


def make_torch_bn_like_keras(num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(num_features=num_features, eps=KERAS_BN_EPSILON, momentum=1.0 - KERAS_BN_MOMENTUM,
                          affine=True, track_running_stats=True)
''',
    # PyTorch's convention converted in the open
    "make_keras_cnn": '''
TORCH_BN_MOMENTUM = 0.1    # PyTorch: weight of the NEW batch
TORCH_BN_EPS = 1e-5


def make_keras_cnn() -> keras.Model:
    return keras_cnn(momentum=1.0 - TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPS)
''',
    # np.einsum names every layout change; one set_weights from a list built in the documented order
    "torch_to_keras": '''
def torch_to_keras(torch_model: nn.Module, keras_model: keras.Model) -> keras.Model:
    p = {name: tensor.detach().cpu().numpy() for name, tensor in torch_model.state_dict().items()}
    conv_kernel = np.einsum("oihw->hwio", p["conv.weight"])
    fc1_kernel = np.einsum("ochw->hwco", p["fc1.weight"].reshape(16, 4, 4, 4)).reshape(4 * 4 * 4, 16)
    fc2_kernel = np.einsum("oi->io", p["fc2.weight"])
    keras_model.set_weights([
        conv_kernel, p["conv.bias"],
        p["bn.weight"], p["bn.bias"], p["bn.running_mean"], p["bn.running_var"],
        fc1_kernel, p["fc1.bias"],
        fc2_kernel, p["fc2.bias"],
    ])
    return keras_model
''',
    # weights looked up by their Keras path, einsum layouts, Parameter.copy_ with an explicit float32 dtype
    "keras_to_torch": '''
def keras_to_torch(keras_model: keras.Model, torch_model: nn.Module) -> nn.Module:
    # paths look like "sequential_3/fc1/kernel": key them by "fc1/kernel"
    k = {"/".join(v.path.split("/")[-2:]): np.asarray(v) for v in keras_model.weights}
    fc1 = np.einsum("hwco->ochw", k["fc1/kernel"].reshape(4, 4, 4, 16)).reshape(16, 4 * 4 * 4)
    targets = {
        "conv.weight": np.einsum("hwio->oihw", k["conv/kernel"]),
        "conv.bias": k["conv/bias"],
        "bn.weight": k["bn/gamma"],
        "bn.bias": k["bn/beta"],
        "bn.running_mean": k["bn/moving_mean"],
        "bn.running_var": k["bn/moving_variance"],
        "fc1.weight": fc1,
        "fc1.bias": k["fc1/bias"],
        "fc2.weight": np.einsum("io->oi", k["fc2/kernel"]),
        "fc2.bias": k["fc2/bias"],
    }
    state = torch_model.state_dict()   # references to the live parameters and buffers
    with torch.no_grad():
        for name, array in targets.items():
            state[name].copy_(torch.tensor(array, dtype=torch.float32))
    return torch_model
''',
    # the cross-entropy written out as -mean(log_softmax picked at the label), the update as assign(v - lr * g)
    "keras_train_step": '''
def keras_train_step(model: keras.Model, x: tf.Tensor, y: tf.Tensor, lr: float) -> tf.Tensor:
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        picked = tf.gather(log_probs, tf.cast(y, tf.int32), axis=1, batch_dims=1)   # log p(label) per sample
        loss = -tf.reduce_mean(picked)
    weights = model.trainable_variables
    gradients = tape.gradient(loss, weights)
    for weight, gradient in zip(weights, gradients):
        weight.assign(weight - tf.cast(lr, weight.dtype) * gradient)
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


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_correct_alternative_answers_pass(course, tmp_path, zygote, answers):
    result, msg = _messages(course, zygote, tmp_path, answers, "alternatives")
    assert result.passed, result.summary()
