"""Module 09 (the capstone): plausible wrong answers fail with messages that teach, and other correct answers
(a subclassed module, the Keras functional API, a hand-written GradientTape loop, torch.utils.benchmark) pass.
The report cells (training curves and the six-mode benchmark, torch.compile included) stay in these notebooks: their
`# clash-report` first line keeps them out of the grader's workers."""
import json

import pytest

from autograder import run_check

from conftest import notebook_with

pytestmark = pytest.mark.slow

M = "09_capstone"

WRONG = {
    # the dense weight only transposed: its 512 inputs stay in PyTorch's (C, H, W) flatten order
    "port_weights": '''
def port_weights(torch_model, keras_model):
    conv_w, conv_b, fc_w, fc_b = (p.detach().numpy() for p in torch_model.parameters())
    keras_model.set_weights([conv_w.transpose(2, 3, 1, 0), conv_b, fc_w.T, fc_b])
    return keras_model
''',
    # the gradients are never reset: every step adds up all the earlier batches' gradients
    "train_torch": '''
def train_torch(model, x, y, epochs, batch_size, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total = []
        for i in range(0, len(x), batch_size):
            loss = F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
            loss.backward()
            opt.step()
            total.append(loss.item())
        losses.append(sum(total) / len(total))
    return losses
''',
    # no warm-up and a mean: the first calls (tracing, compiling) are in the number
    "benchmark_step": '''
MODES = ("torch_eager", "torchscript", "torch_compile", "tf_eager", "tf_function", "tf_xla")

def benchmark_step(modes, batch_size=100, steps=20, warmup=3):
    x, y = digits(batch_size, seed=0)
    result = {}
    for mode in modes:
        if mode.startswith("tf"):
            step = make_keras_step(build_keras_cnn(), mode)
            args = (tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y))
        else:
            step = make_torch_step(build_torch_cnn(), mode)
            args = (torch.from_numpy(x), torch.from_numpy(y))
        t0 = time.perf_counter()
        for _ in range(steps):
            step(*args)
        result[mode] = (time.perf_counter() - t0) / steps
    return result
''',
}

HARD_CODED = {
    # numbers measured once and typed in
    "benchmark_step": '''
MODES = ("torch_eager", "torchscript", "torch_compile", "tf_eager", "tf_function", "tf_xla")
MEASURED = {"torch_eager": 0.0031, "torchscript": 0.0034, "torch_compile": 0.0025, "tf_eager": 0.021,
            "tf_function": 0.0042, "tf_xla": 0.0036}

def benchmark_step(modes, batch_size=100, steps=20, warmup=3):
    return {m: MEASURED[m] for m in modes}
''',
}


def test_wrong_answers_fail_with_messages_that_teach(course, tmp_path, zygote):
    module = course.module(M)
    result = run_check(M, notebook=notebook_with(module.solution, WRONG, tmp_path / "wrong.ipynb"), course=course,
                       zygote=zygote)
    msg = {p.id: p.message for p in result.parts}
    status = {p.id: p.status for p in result.parts}
    assert status["equivalence"] == "failed"
    assert "the Keras model after port_weights" in msg["equivalence"]
    assert "left in PyTorch's flatten order" in msg["equivalence"] and "(H, W, C)" in msg["equivalence"]
    assert status["converges"] == "failed", msg["converges"]
    assert "gradients reset every batch" in msg["converges"] or "reset the gradients" in msg["converges"]
    assert status["benchmark"] == "failed", msg["benchmark"]
    assert "the grader's clock says" in msg["benchmark"] and "include the first calls" in msg["benchmark"]
    assert "warmup` untimed steps" in msg["benchmark"]

    result = run_check(f"{M}.benchmark_scales", course=course, zygote=zygote,
                       notebook=notebook_with(module.solution, HARD_CODED, tmp_path / "hard.ipynb"))
    (part,) = result.parts
    assert part.status == "failed", part.message
    assert "the grader's clock says" in part.message and "at the batch size it is given" in part.message


ALTERNATIVES = {
    # a subclassed module with torch.flatten instead of nn.Sequential
    "build_torch_cnn": '''
class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))

def build_torch_cnn():
    return TorchCNN()
''',
    # the Keras functional API, ReLU as its own layer
    "build_keras_cnn": '''
def build_keras_cnn():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs))
    outputs = keras.layers.Dense(10, name="fc")(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)
''',
    # layer by layer, the layouts converted with torch ops, the flatten order fixed on the NCHW side
    "port_weights": '''
def port_weights(torch_model, keras_model):
    sd = {k: v.detach().cpu() for k, v in torch_model.state_dict().items()}
    conv_w, conv_b, fc_w, fc_b = sd.values()
    convs = [l for l in keras_model.layers if isinstance(l, keras.layers.Conv2D)]
    denses = [l for l in keras_model.layers if isinstance(l, keras.layers.Dense)]
    convs[0].set_weights([conv_w.permute(2, 3, 1, 0).numpy(), conv_b.numpy()])
    dense = fc_w.reshape(10, 8, 8, 8).permute(2, 3, 1, 0).reshape(512, 10)
    denses[0].set_weights([dense.numpy(), fc_b.numpy()])
    return keras_model
''',
    # gradients set to None, losses kept as tensors until the end
    "train_torch": '''
def train_torch(model, x, y, epochs, batch_size, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = []
    for _ in range(epochs):
        batch_losses = []
        for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size)):
            opt.zero_grad(set_to_none=True)
            loss = nn.CrossEntropyLoss()(model(xb), yb)
            loss.backward()
            opt.step()
            batch_losses.append(loss.detach())
        per_epoch.append(torch.stack(batch_losses).mean())
    return per_epoch
''',
    # a hand-written GradientTape loop under tf.function instead of model.fit
    "train_keras": '''
def train_keras(model, x, y, epochs, batch_size, lr):
    opt = keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, model(xb, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss
    losses = []
    for _ in range(epochs):
        batch = [float(step(x[i:i + batch_size], y[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        losses.append(sum(batch) / len(batch))
    return losses
''',
    # torch.utils.benchmark's Timer for the PyTorch modes (it synchronises CUDA itself), timeit for TF, one step
    # of every mode per round (interleaved, as the lesson teaches: timing the modes one after another lets a busy
    # spell of the machine land on one mode only)
    "benchmark_step": '''
import timeit
import torch.utils.benchmark as torch_benchmark

MODES = ("torch_eager", "torchscript", "torch_compile", "tf_eager", "tf_function", "tf_xla")

def benchmark_step(modes, batch_size=100, steps=20, warmup=3):
    x, y = digits(batch_size, seed=0)
    timers = {}
    for mode in modes:
        if mode.startswith("tf"):
            step = make_keras_step(build_keras_cnn(), mode)
            xt, yt = tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y)
            timers[mode] = (lambda step=step, xt=xt, yt=yt: timeit.timeit(lambda: step(xt, yt).numpy(), number=1))
        else:
            step = make_torch_step(build_torch_cnn().to(DEVICE), mode)
            xt, yt = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
            timer = torch_benchmark.Timer("step(x, y)", globals={"step": step, "x": xt, "y": yt})
            timers[mode] = (lambda timer=timer: timer.timeit(1).median)
        for _ in range(warmup):
            timers[mode]()
    times = {mode: [] for mode in modes}
    for _ in range(steps):
        for mode in modes:
            times[mode].append(timers[mode]())
    return {mode: statistics.median(t) for mode, t in times.items()}
''',
}


ALTERNATIVES_STRUCTURE = {
    # nn.Sequential built from an OrderedDict of named layers
    "build_torch_cnn": '''
from collections import OrderedDict


def build_torch_cnn():
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels=1, out_channels=8, kernel_size=3, padding=1)),
        ("relu", nn.ReLU()),
        ("flatten", nn.Flatten(start_dim=1)),
        ("fc", nn.Linear(in_features=512, out_features=10)),
    ]))
''',
    # a subclassed keras.Model, called once on a dummy batch so that its weights exist before port_weights
    "build_keras_cnn": '''
class KerasCNN(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.flatten = keras.layers.Flatten()
        self.fc = keras.layers.Dense(10)

    def call(self, x):
        return self.fc(self.flatten(self.conv(x)))


def build_keras_cnn():
    model = KerasCNN()
    model(tf.zeros((1, 8, 8, 1)))  # creates the weights (Keras 3's build() on a shape does not run call())
    return model
''',
    # one converter per layer kind, applied pairwise to the PyTorch modules and the Keras layers that hold weights
    "port_weights": '''
def _conv_to_keras(module):
    w, b = module.weight.detach().cpu().numpy(), module.bias.detach().cpu().numpy()
    return [w.transpose(2, 3, 1, 0), b]  # OIHW -> HWIO


def _dense_to_keras(module, channels=8, height=8, width=8):
    w, b = module.weight.detach().cpu().numpy(), module.bias.detach().cpu().numpy()
    # the inputs arrive in (C, H, W) order from PyTorch's flatten and in (H, W, C) order from Keras's
    w = w.reshape(-1, channels, height, width).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return [w.T, b]


def port_weights(torch_model, keras_model):
    converters = {nn.Conv2d: _conv_to_keras, nn.Linear: _dense_to_keras}
    sources = [m for m in torch_model.modules() if type(m) in converters]
    targets = [layer for layer in keras_model.layers if layer.weights]
    for module, layer in zip(sources, targets, strict=True):
        layer.set_weights(converters[type(module)](module))
    return keras_model
''',
    # a DataLoader over a TensorDataset (shuffle=False), one epoch per helper call
    "train_torch": '''
from torch.utils.data import DataLoader, TensorDataset


def _epoch(model, optimizer, loader):
    batch_losses = []
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        batch_losses.append(loss.item())
    return sum(batch_losses) / len(batch_losses)


def train_torch(model, x, y, epochs, batch_size, lr):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    return [_epoch(model, optimizer, loader) for _ in range(epochs)]
''',
    # compile once, then model.train_on_batch on each slice, in order
    "train_keras": '''
def train_keras(model, x, y, epochs, batch_size, lr):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = int(x.shape[0])
    history = []
    for _ in range(epochs):
        batch_losses = [float(model.train_on_batch(x[i:i + batch_size], y[i:i + batch_size]))
                        for i in range(0, n, batch_size)]
        history.append(sum(batch_losses) / len(batch_losses))
    return history
''',
    # a callable class holding the (wrapped) model and its optimizer
    "make_torch_step": '''
import warnings


class TorchStep:
    WRAPPERS = {"torch_eager": lambda m: m, "torchscript": torch.jit.script, "torch_compile": torch.compile}

    def __init__(self, model, mode, lr):
        if mode not in self.WRAPPERS:
            raise ValueError(f"unknown PyTorch mode {mode!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            self.model = self.WRAPPERS[mode](model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def __call__(self, x, y):
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def make_torch_step(model, mode, lr=1e-3):
    return TorchStep(model, mode, lr)
''',
    # a tf.Module that owns the optimizer; the step is its method, wrapped per mode
    "make_keras_step": '''
class KerasStep(tf.Module):
    def __init__(self, model, lr):
        super().__init__()
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8)

    def step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss


def make_keras_step(model, mode, lr=1e-3):
    owner = KerasStep(model, lr)
    if mode == "tf_eager":
        return owner.step
    if mode in ("tf_function", "tf_xla"):
        return tf.function(owner.step, jit_compile=(mode == "tf_xla"))
    raise ValueError(f"unknown TensorFlow mode {mode!r}")
''',
    # one Runner object per mode (step, batch, device sync), timed round-robin by a helper
    "benchmark_step": '''
MODES = ("torch_eager", "torchscript", "torch_compile", "tf_eager", "tf_function", "tf_xla")


class Runner:
    def __init__(self, mode, x, y):
        if mode.startswith("tf_"):
            self.step = make_keras_step(build_keras_cnn(), mode)
            self.args = (tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1))), tf.constant(y))
            gpu = bool(tf.config.list_logical_devices("GPU"))
            self.sync = tf.test.experimental.sync_devices if gpu else (lambda: None)
        else:
            self.step = make_torch_step(build_torch_cnn().to(DEVICE), mode)
            self.args = (torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE))
            self.sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def run(self):
        self.step(*self.args)
        self.sync()

    def timed(self):
        t0 = time.perf_counter()
        self.run()
        return time.perf_counter() - t0


def _round_robin(runners, steps):
    samples = {mode: [] for mode in runners}
    for _ in range(steps):
        for mode, runner in runners.items():
            samples[mode].append(runner.timed())
    return samples


def benchmark_step(modes, batch_size=100, steps=20, warmup=3):
    x, y = digits(batch_size, seed=0)
    runners = {mode: Runner(mode, x, y) for mode in modes}
    for runner in runners.values():
        for _ in range(warmup):
            runner.run()
    return {mode: float(np.median(ts)) for mode, ts in _round_robin(runners, steps).items()}
''',
}

ALTERNATIVES_STYLE = {
    # Sequential with nn.Flatten's defaults and the feature count computed from the shapes
    "build_torch_cnn": '''
def build_torch_cnn() -> nn.Module:
    channels, height, width = 8, 8, 8
    layers = [nn.Conv2d(1, channels, (3, 3), stride=1, padding="same"), nn.ReLU(inplace=False), nn.Flatten(),
              nn.Linear(channels * height * width, 10)]
    return nn.Sequential(*layers)
''',
    # model.add one layer at a time, the input given by keras.layers.InputLayer, ReLU as an Activation layer
    "build_keras_cnn": '''
def build_keras_cnn() -> keras.Model:
    model = keras.Sequential(name="digits_cnn")
    model.add(keras.layers.InputLayer(shape=(8, 8, 1)))
    model.add(keras.layers.Conv2D(filters=8, kernel_size=(3, 3), padding="same"))
    model.add(keras.layers.Activation("relu"))
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(units=10))
    return model
''',
    # the layouts converted with np.einsum index strings, the weights read from the state_dict by name
    "port_weights": '''
def port_weights(torch_model, keras_model):
    state = {name: t.detach().cpu().numpy() for name, t in torch_model.state_dict().items()}
    (conv_w, conv_b), (fc_w, fc_b) = [(state[f"{p}.weight"], state[f"{p}.bias"])
                                       for p in dict.fromkeys(k.rsplit(".", 1)[0] for k in state)]
    kernel = np.einsum("oihw->hwio", conv_w)
    dense = np.einsum("ochw->hwco", fc_w.reshape(10, 8, 8, 8)).reshape(512, 10)
    keras_model.set_weights([kernel, conv_b, dense, fc_b])
    return keras_model
''',
    # summed losses kept on the device (one host read per epoch), the batch count by math.ceil
    "train_torch": '''
import math


def train_torch(model, x, y, epochs, batch_size, lr):
    optimizer = torch.optim.Adam(params=model.parameters(), lr=lr)
    n_batches = math.ceil(len(x) / batch_size)
    epoch_means = []
    for epoch in range(epochs):
        running = torch.zeros((), device=x.device)
        for b in range(n_batches):
            lo, hi = b * batch_size, min((b + 1) * batch_size, len(x))
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[lo:hi]), y[lo:hi])
            loss.backward()
            optimizer.step()
            running += loss.detach()
        epoch_means.append((running / n_batches).item())
    return epoch_means
''',
    # model.fit on a batched tf.data.Dataset (in order), the loss given as a function with from_logits
    "train_keras": '''
import functools


def train_keras(model, x, y, epochs, batch_size, lr):
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    loss = functools.partial(keras.losses.sparse_categorical_crossentropy, from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8), loss=loss)
    fitted = model.fit(batches, epochs=epochs, verbose=0)
    return [float(v) for v in fitted.history["loss"]]
''',
    # a dict from mode to wrapper, and the loss via log_softmax and nll_loss
    "make_torch_step": '''
def make_torch_step(model, mode, lr=1e-3):
    import warnings
    wrappers = {
        "torch_eager": lambda m: m,
        "torchscript": torch.jit.script,
        "torch_compile": torch.compile,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = wrappers[mode](model)
    adam = torch.optim.Adam(wrapped.parameters(), lr)

    def step(x, y):
        adam.zero_grad(set_to_none=True)
        loss = F.nll_loss(F.log_softmax(wrapped(x), dim=1), y)
        loss.backward()
        adam.step()
        return loss.detach()
    return step
''',
    # the loss from tf.nn, and functools.partial(tf.function, jit_compile=True) in a table of wrappers
    "make_keras_step": '''
import functools


def make_keras_step(model, mode, lr=1e-3):
    adam = keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8)

    def step(x, y):
        with tf.GradientTape() as tape:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x, training=True))
            loss = tf.reduce_mean(per_example)
        variables = model.trainable_variables
        adam.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    wrappers = {"tf_eager": lambda f: f, "tf_function": tf.function,
                "tf_xla": functools.partial(tf.function, jit_compile=True)}
    return wrappers[mode](step)
''',
    # integer nanosecond clock, sync functions chosen up front, the median of a sorted list by index
    "benchmark_step": '''
MODES = ("torch_eager", "torchscript", "torch_compile", "tf_eager", "tf_function", "tf_xla")


def _median(values):
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else 0.5 * (ordered[half - 1] + ordered[half])


def benchmark_step(modes, batch_size=100, steps=20, warmup=3):
    x_nchw, labels = digits(batch_size, seed=0)
    x_nhwc, _ = digits(batch_size, seed=0, channels_last=True)
    no_sync = lambda: None  # noqa: E731
    torch_sync = torch.cuda.synchronize if torch.cuda.is_available() else no_sync
    tf_sync = tf.test.experimental.sync_devices if tf.config.list_logical_devices("GPU") else no_sync
    prepared = []
    for mode in modes:
        if mode in ("tf_eager", "tf_function", "tf_xla"):
            prepared.append((mode, make_keras_step(build_keras_cnn(), mode),
                             (tf.convert_to_tensor(x_nhwc), tf.convert_to_tensor(labels)), tf_sync))
        else:
            prepared.append((mode, make_torch_step(build_torch_cnn().to(DEVICE), mode),
                             (torch.as_tensor(x_nchw, device=DEVICE), torch.as_tensor(labels, device=DEVICE)),
                             torch_sync))
    for _, step, args, sync in prepared:
        for _ in range(warmup):
            step(*args)
        sync()
    elapsed_ns = {mode: [] for mode, *_ in prepared}
    for _ in range(steps):
        for mode, step, args, sync in prepared:  # one step of each mode per round
            start = time.perf_counter_ns()
            step(*args)
            sync()
            elapsed_ns[mode].append(time.perf_counter_ns() - start)
    return {mode: _median(ns) * 1e-9 for mode, ns in elapsed_ns.items()}
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_other_correct_answers_pass(course, tmp_path, zygote, answers):
    module = course.module(M)
    nb = notebook_with(module.solution, answers, tmp_path / "alternatives.ipynb")
    result = run_check(M, notebook=nb, course=course, zygote=zygote)
    assert result.passed, [(p.id, p.message) for p in result.parts if not p.passed]


def test_the_exercise_states_the_graders_own_bands(course):
    """The bands a student's benchmark must meet are quoted from the grader's constants, so the text cannot drift."""
    from autograder.exercises import m09_capstone as spec
    text = json.loads(course.module(M).exercise_notebook.read_text())
    prose = " ".join("".join(c["source"]) for c in text["cells"] if c["cell_type"] == "markdown")
    prose = " ".join(prose.split())
    assert f"within {spec.BAND:g}x of its ratio" in prose
    assert f"at least 1/{spec.SCALES_BAND:g} and at most {spec.SCALES_HIGH:g} times the growth" in prose
    assert f"each mode's time within {spec.MODE_BAND:g}x of its own" in prose


# Issue 12: evidence the student's process cannot forge.
ZERO_INIT = '''
def build_torch_cnn():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    for p in model.parameters():
        nn.init.zeros_(p)
    return model
'''

# The Keras run trains twice as long on shuffled batches with Keras's own epsilon (so its accuracy clears the bar),
# and reports the PyTorch run's curve, kept in a global.
COPIED_CURVE = {
    "train_torch": '''
_CURVE = []


def train_torch(model, x, y, epochs, batch_size, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(x), batch_size):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / -(-len(x) // batch_size))
    _CURVE[:] = losses
    return losses
''',
    "train_keras": '''
def train_keras(model, x, y, epochs, batch_size, lr):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=batch_size, epochs=2 * epochs, verbose=0)
    return list(_CURVE) or history.history["loss"][:epochs]
''',
}


def _part(course, tmp_path, zygote, part, replacements):
    nb = notebook_with(course.module(M).solution, replacements, tmp_path / f"{part}.ipynb")
    (got,) = run_check(f"{M}.{part}", notebook=nb, course=course, zygote=zygote).parts
    return got


def test_weights_the_student_chose_cannot_make_a_wrong_port_look_right(course, tmp_path, zygote):
    """The truth was computed from the PyTorch model's own weights, read back from the student's process: with all of
    them zero, every port agrees with it. The grader now loads weights it drew itself."""
    got = _part(course, tmp_path, zygote, "equivalence", {"build_torch_cnn": ZERO_INIT, **{
        "port_weights": WRONG["port_weights"]}})
    assert got.status == "failed", got.message
    assert "left in PyTorch's flatten order" in got.message
    # The control: the same zero-initialised model with the right port passes.
    assert _part(course, tmp_path, zygote, "equivalence", {"build_torch_cnn": ZERO_INIT}).passed


def test_a_loss_curve_copied_from_the_other_framework_fails(course, tmp_path, zygote):
    """The loss curves are held only to each other; the trained model's logits are held to the reference's."""
    got = _part(course, tmp_path, zygote, "converges", COPIED_CURVE)
    assert got.status == "failed", got.message
    assert "the curve train_keras reports is not its training's" in got.message and "shuffle=False" in got.message
    # The control: the PyTorch half of the attack, honest on its own, passes with the solution's Keras training.
    assert _part(course, tmp_path, zygote, "converges", {"train_torch": COPIED_CURVE["train_torch"]}).passed
