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


def test_other_correct_answers_pass(course, tmp_path, zygote):
    module = course.module(M)
    nb = notebook_with(module.solution, ALTERNATIVES, tmp_path / "alternatives.ipynb")
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
