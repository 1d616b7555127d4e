"""Module 04 (tf.function and AutoGraph): plausible wrong answers fail with messages that teach, and other
correct answers (another tf.function option, another loop structure, another update API) pass."""
import pytest

from autograder import run_check

from conftest import notebook_with

pytestmark = pytest.mark.slow

M = "04_tf_function"

WRONG = {
    # no input_signature, no reduce_retracing: one trace per batch size
    "make_tf_train_step": '''
def make_tf_train_step(w, b, lr):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
        gw, gb = tape.gradient(loss, [w, b])
        w.assign_sub(lr * gw)
        b.assign_sub(lr * gb)
        return loss
    return step
''',
    # a Python range over a Python int: unrolled at trace time
    "tf_power_iteration": '''
@tf.function
def tf_power_iteration(A, v, n):
    for _ in range(n):
        v = tf.linalg.matvec(A, v)
        v = v / tf.norm(v)
    return v
''',
    # reading a tensor's value while tracing
    "tf_clip_by_norm": '''
@tf.function
def tf_clip_by_norm(g, c):
    norm = tf.norm(g)
    if norm.numpy() > c.numpy():
        return g * (c / norm)
    return g
''',
    # the gradients are never reset: they accumulate over the stream
    "make_torch_train_step": '''
def make_torch_train_step(w, b, lr):
    def step(x, y):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w.sub_(lr * w.grad)
            b.sub_(lr * b.grad)
        return loss.detach()
    return step
''',
}

WRONG_2 = {
    # a new optimizer, and so new variables, inside the step
    "make_tf_train_step": '''
def make_tf_train_step(w, b, lr):
    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None])])
    def step(x, y):
        opt = tf.keras.optimizers.SGD(lr)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        return loss
    return step
''',
    # NumPy on a symbolic tensor
    "tf_clip_by_norm": '''
@tf.function
def tf_clip_by_norm(g, c):
    norm = np.linalg.norm(g)
    return g * min(1.0, c / norm)
''',
    # rebinding instead of updating in place: the caller's tensors never change
    "make_torch_train_step": '''
def make_torch_train_step(w, b, lr):
    state = {"w": w, "b": b}
    def step(x, y):
        loss = ((x @ state["w"] + state["b"] - y) ** 2).mean()
        gw, gb = torch.autograd.grad(loss, [state["w"], state["b"]])
        state["w"] = (state["w"] - lr * gw).detach().requires_grad_()
        state["b"] = (state["b"] - lr * gb).detach().requires_grad_()
        return loss.detach()
    return step
''',
}


def test_wrong_answers_fail_with_messages_that_teach(course, tmp_path, zygote):
    module = course.module(M)
    result = run_check(M, notebook=notebook_with(module.solution, WRONG, tmp_path / "wrong.ipynb"), course=course,
                       zygote=zygote)
    msg = {p.id: p.message for p in result.parts}
    status = {p.id: p.status for p in result.parts}
    assert status["tf_step"] == "failed" and "the step traced 5 more times for 5 new batch sizes" in msg["tf_step"]
    assert "input_signature" in msg["tf_step"] and "reduce_retracing=True" in msg["tf_step"]
    assert "no While op: the Python loop was unrolled" in msg["tf_while"] and "tf.range(n)" in msg["tf_while"]
    assert "'SymbolicTensor' object has no attribute 'numpy'" in msg["tf_clip"]
    assert "tensors are symbolic and have no value yet" in msg["tf_clip"]
    assert status["torch_step"] == "failed" and "differ beyond" in msg["torch_step"]
    assert status["cross_step"] == "failed" and msg["cross_step"].startswith("make_torch_train_step is off [w]")
    assert "make_tf_train_step gave" in msg["cross_step"] and "float64 NumPy gives" in msg["cross_step"]

    result = run_check(M, notebook=notebook_with(module.solution, WRONG_2, tmp_path / "wrong2.ipynb"), course=course,
                       zygote=zygote)
    msg = {p.id: p.message for p in result.parts}
    assert "ValueError" in msg["tf_step"] and "singleton tf.Variables created on the first call" in msg["tf_step"]
    assert msg["tf_step"].startswith("the step from make_tf_train_step raised ValueError: tf.function only")
    assert "once, outside the step" in msg["tf_step"] and "course helpers" not in msg["tf_step"]
    assert "tensors are symbolic and have no value yet" in msg["tf_clip"], msg["tf_clip"]
    assert "w and b are still their starting values: update the tensors you were given in place" in msg["torch_step"]
    assert result.score == 2  # only tf_while (the solution's) is left standing
    assert {p.id for p in result.parts if p.status == "passed"} == {"tf_while"}


ALTERNATIVES = {
    # reduce_retracing instead of input_signature, a Keras optimizer instead of assign_sub
    "make_tf_train_step": '''
def make_tf_train_step(w, b, lr):
    opt = tf.keras.optimizers.SGD(learning_rate=lr)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.MeanSquaredError()(y, tf.matmul(x, w) + b)
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        return loss
    return step
''',
    # tf.while_loop instead of a for loop over tf.range
    "tf_power_iteration": '''
@tf.function
def tf_power_iteration(A, v, n):
    def body(i, v):
        v = tf.linalg.matvec(A, v)
        return i + 1, v / tf.norm(v)
    _, v = tf.while_loop(lambda i, v: i < n, body, (tf.constant(0), v))
    return v
''',
    # the library's own op, no if at all
    "tf_clip_by_norm": '''
@tf.function
def tf_clip_by_norm(g, c):
    return tf.clip_by_norm(g, c)
''',
    # torch.optim.SGD instead of manual updates
    "make_torch_train_step": '''
def make_torch_train_step(w, b, lr):
    opt = torch.optim.SGD([w, b], lr=lr)
    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(x @ w + b, y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step
''',
}


ALTERNATIVES_STRUCTURE = {
    # a tf.Module that owns the variables, the loss a helper method; the factory returns the tf.function it builds
    # around its method (a strong reference: a @tf.function method fetched from a dropped instance holds it weakly)
    "make_tf_train_step": '''
class LinearRegressionTrainer(tf.Module):
    def __init__(self, w, b, lr):
        super().__init__()
        self.w, self.b, self.lr = w, b, lr
        self.step = tf.function(self._step, input_signature=[tf.TensorSpec([None, None], tf.float32),
                                                             tf.TensorSpec([None, None], tf.float32)])

    def loss(self, x, y):
        residual = tf.matmul(x, self.w) + self.b - y
        return tf.reduce_mean(residual * residual)

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            loss = self.loss(x, y)
        grad_w, grad_b = tape.gradient(loss, [self.w, self.b])
        self.w.assign_sub(self.lr * grad_w)
        self.b.assign_sub(self.lr * grad_b)
        return loss


def make_tf_train_step(w, b, lr):
    return LinearRegressionTrainer(w, b, lr).step
''',
    # a `while` on a tensor counter (AutoGraph makes it a While op), the update in a helper function
    "tf_power_iteration": '''
def normalised_matvec(A, v):
    Av = tf.linalg.matvec(A, v)
    return Av / tf.norm(Av)


@tf.function
def tf_power_iteration(A, v, n):
    i = tf.constant(0)
    while i < n:
        v = normalised_matvec(A, v)
        i += 1
    return v
''',
    # tf.cond on two named branch functions instead of an `if`
    "tf_clip_by_norm": '''
@tf.function
def tf_clip_by_norm(g, c):
    norm = tf.norm(g)

    def scaled_down():
        return g * (c / norm)

    def unchanged():
        return tf.identity(g)

    return tf.cond(norm > c, scaled_down, unchanged)
''',
    # a callable class instead of a closure; torch.autograd.grad, so no .grad to reset
    "make_torch_train_step": '''
class TorchLinearStep:
    def __init__(self, w, b, lr):
        self.w, self.b, self.lr = w, b, lr

    def __call__(self, x, y):
        loss = ((x @ self.w + self.b - y) ** 2).mean()
        grad_w, grad_b = torch.autograd.grad(loss, [self.w, self.b])
        with torch.no_grad():
            self.w -= self.lr * grad_w  # an attribute, not a local name: this is in place
            self.b -= self.lr * grad_b
        return loss.detach()


def make_torch_train_step(w, b, lr):
    return TorchLinearStep(w, b, lr)
''',
}

ALTERNATIVES_STYLE = {
    # tf.function called on a function rather than used as a decorator; the spec from the variables' dtype; a
    # gradient dict; assign(v - ...) instead of assign_sub; type hints
    "make_tf_train_step": '''
def make_tf_train_step(w: tf.Variable, b: tf.Variable, lr: float):
    features, outputs = w.shape
    signature = [tf.TensorSpec(shape=(None, features), dtype=w.dtype, name="x"),
                 tf.TensorSpec(shape=(None, outputs), dtype=w.dtype, name="y")]

    def gradient_descent_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.math.squared_difference(x @ w + b, y))
        grads = tape.gradient(loss, {"w": w, "b": b})
        w.assign(w - lr * grads["w"])
        b.assign(b - lr * grads["b"])
        return loss

    return tf.function(gradient_descent_step, input_signature=signature)
''',
    # tf.foldl over tf.range(n) (a While op inside), einsum for the product, l2_normalize for the division
    "tf_power_iteration": '''
@tf.function
def tf_power_iteration(A, v, n):
    return tf.foldl(lambda u, _: tf.math.l2_normalize(tf.einsum("ij,j->i", A, u)), tf.range(n), initializer=v)
''',
    # branch-free: a scale factor min(1, c / ||g||), the norm written out as sqrt(sum(g^2))
    "tf_clip_by_norm": '''
@tf.function
def tf_clip_by_norm(g, c):
    norm = tf.sqrt(tf.reduce_sum(tf.square(g)))
    return g * tf.minimum(tf.constant(1.0, g.dtype), c / norm)  # g == 0: c / 0 = inf, so the scale is 1
''',
    # the mean written as sum / count, add_(alpha=-lr) in a no_grad helper, gradients zeroed instead of dropped
    "make_torch_train_step": '''
def make_torch_train_step(w: torch.Tensor, b: torch.Tensor, lr: float):
    @torch.no_grad()
    def descend(param: torch.Tensor) -> None:
        param.add_(param.grad, alpha=-lr)
        param.grad.zero_()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squared_error = (torch.addmm(b, x, w) - y).pow(2)
        loss = squared_error.sum() / squared_error.numel()
        loss.backward()
        descend(w)
        descend(b)
        return loss.detach()

    return step
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_correct_alternative_answers_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(course.module(M).solution, answers, tmp_path / "alt.ipynb")
    result = run_check(M, notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()
    if answers is ALTERNATIVES:
        assert "at most 1 trace(s) after the first call" in result.parts[0].message  # reduce_retracing generalises once


# torch.compile, which the text allows: the loss and gradient compiled, the update eager. Its first call is a cold
# Inductor build (46-81 s on a busy 2-core machine, against a 60 s per-call limit it once failed).
COMPILED_STEP = '''
@torch.compile(dynamic=True)  # one compiled loss, weights passed in: every batch size and every (d, k) share it
def squared_error(x, y, w, b):
    return ((x @ w + b - y) ** 2).mean()


def make_torch_train_step(w, b, lr):
    def step(x, y):
        loss = squared_error(x, y, w, b)
        loss.backward()
        with torch.no_grad():
            w.sub_(lr * w.grad)
            b.sub_(lr * b.grad)
        w.grad = None
        b.grad = None
        return loss.detach()
    return step
'''


def test_a_torch_compile_step_gets_the_compile_allowance(course, tmp_path, zygote):
    """The per-call limit is cut to 10 s here. The cold compile of the first call takes longer (measured on this
    machine, idle: the check fails with "took longer than 10 s" when the allowance is cut to 10 s too), so it passes
    only through the compile allowance of a `compiles = true` part; the later calls must still meet 10 s. (2 s, the
    first cut, was missed by ordinary calls under three test processes on two cores.)"""
    import dataclasses
    part = course.module(M).exercise.part("torch_step")
    assert part.compiles
    nb = notebook_with(course.module(M).solution, {"make_torch_train_step": COMPILED_STEP}, tmp_path / "c.ipynb")
    limits = dataclasses.replace(course.limits, call_timeout_s=10)
    result = run_check(f"{M}.torch_step", notebook=nb, course=course, zygote=zygote, limits=limits)
    (got,) = result.parts
    assert got.status == "passed", got.message
