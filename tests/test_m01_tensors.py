"""Module 01 (one linear regression, two frameworks): correct answers in other APIs, structures and styles pass."""
import pytest

from autograder import run_check

from conftest import notebook_with

pytestmark = pytest.mark.slow

# Another API: torch.autograd.grad, a persistent tape with tf.matmul and a Keras loss, optimisers, @tf.function.
ALTERNATIVES = {
    # torch.autograd.grad and F.mse_loss instead of .backward() and a hand-written mean
    "torch_loss_and_grad": '''
def torch_loss_and_grad(w, x, y):
    w = w.clone().requires_grad_()
    loss = torch.nn.functional.mse_loss(x @ w, y)
    (grad,) = torch.autograd.grad(loss, w)
    return loss.detach(), grad
''',
    # a persistent tape, tf.matmul on column vectors and a Keras loss object
    "tf_loss_and_grad": '''
def tf_loss_and_grad(w, x, y):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w)
        loss = tf.keras.losses.MeanSquaredError()(y[:, None], tf.matmul(x, w[:, None]))
    return loss, tape.gradient(loss, w)
''',
    # torch.optim.SGD on an nn.Parameter instead of a manual update
    "torch_fit": '''
def torch_fit(w0, x, y, lr, steps):
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(x @ w, y).backward()
        opt.step()
    return w.detach()
''',
    # keras.optimizers.SGD.apply_gradients instead of assign_sub
    "tf_fit": '''
def tf_fit(w0, x, y, lr, steps):
    w = tf.Variable(w0)
    optimizer = tf.keras.optimizers.SGD(learning_rate=lr)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.MeanSquaredError()(y, tf.linalg.matvec(x, w))
        optimizer.apply_gradients([(tape.gradient(loss, w), w)])
    return tf.identity(w)
''',
    # the decorator instead of calling tf.function
    "tf_loss_and_grad_graph": '''
@tf.function
def tf_loss_and_grad_graph(w, x, y):
    return tf_loss_and_grad(w, x, y)
''',
}

# Another structure: an nn.Module and a tf.Module, the training loops built on Parts 1 and 2, a graphed method.
ALTERNATIVES_STRUCTURE = {
    # the regression as an nn.Module whose parameter is w; the loss is its forward pass
    "torch_loss_and_grad": '''
class LinearRegression(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.detach().clone())

    def forward(self, x, y):
        residual = x @ self.w - y
        return (residual * residual).mean()


def torch_loss_and_grad(w, x, y):
    model = LinearRegression(w)
    loss = model(x, y)
    loss.backward()
    return loss.detach(), model.w.grad
''',
    # a tf.Module holding w as a trainable variable, which the tape watches without tape.watch
    "tf_loss_and_grad": '''
class TfLinearRegression(tf.Module):
    def __init__(self, w):
        super().__init__()
        self.w = tf.Variable(w)

    def __call__(self, x, y):
        residual = tf.squeeze(x @ self.w[:, None], axis=1) - y
        return tf.reduce_mean(residual * residual)


def tf_loss_and_grad(w, x, y):
    model = TfLinearRegression(w)
    with tf.GradientTape() as tape:
        loss = model(x, y)
    return loss, tape.gradient(loss, model.w)
''',
    # the loop reuses Part 1's function and rebinds w each step instead of updating in place
    "torch_fit": '''
def torch_fit(w0, x, y, lr, steps):
    w = w0.detach().clone()
    step = 0
    while step < steps:
        _, grad = torch_loss_and_grad(w, x, y)
        w = w - lr * grad
        step += 1
    return w
''',
    # the loop reuses Part 2's function on plain tensors instead of a tf.Variable
    "tf_fit": '''
def tf_fit(w0, x, y, lr, steps):
    w = tf.identity(w0)
    for _ in range(steps):
        _, grad = tf_loss_and_grad(w, x, y)
        w = w - lr * grad
    return w
''',
    # a tf.function method of a tf.Module, bound to one instance; the graph has its own loss, no tf.Variable
    "tf_loss_and_grad_graph": '''
class GraphedLossAndGrad(tf.Module):
    @tf.function
    def __call__(self, w, x, y):
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
        return loss, tape.gradient(loss, w)


tf_loss_and_grad_graph = GraphedLossAndGrad().__call__
''',
}

# Another style: einsum, the mean written as a sum over n, explicit float32, type hints, an input_signature.
ALTERNATIVES_STYLE = {
    # einsum and sum / n with type hints
    "torch_loss_and_grad": '''
def torch_loss_and_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weights = w.detach().clone().to(torch.float32).requires_grad_(True)
    residuals = torch.einsum("nd,d->n", x, weights) - y
    n_samples = x.shape[0]
    mse = residuals.pow(2).sum() / n_samples
    mse.backward()
    return mse.detach(), weights.grad.detach()
''',
    # tf.einsum, the sample count cast to float32 explicitly, the tape not persistent
    "tf_loss_and_grad": '''
def tf_loss_and_grad(w: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(w)
        residuals = tf.einsum("nd,d->n", x, w) - y
        n_samples = tf.cast(tf.shape(x)[0], tf.float32)
        mse = tf.reduce_sum(residuals ** 2) / n_samples
    gradient = tape.gradient(mse, w)
    return mse, gradient
''',
    # the update through .data with the gradient zeroed in place, and an explicit float32 learning rate
    "torch_fit": '''
def torch_fit(w0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    weights = torch.zeros_like(w0, dtype=torch.float32)
    weights.copy_(w0)          # a copy: w0 must not change
    weights.requires_grad_(True)
    learning_rate = torch.tensor(lr, dtype=torch.float32, device=w0.device)
    for step in range(steps):
        mse = torch.mean(torch.square(torch.mv(x, weights) - y))
        if weights.grad is not None:
            weights.grad.zero_()
        mse.backward()
        weights.data.sub_(learning_rate * weights.grad)
    return weights.detach()
''',
    # w.assign(w - step) with tf.einsum, the learning rate cast to float32, read_value() at the end
    "tf_fit": '''
def tf_fit(w0: tf.Tensor, x: tf.Tensor, y: tf.Tensor, lr: float, steps: int) -> tf.Tensor:
    weights = tf.Variable(tf.identity(w0), dtype=tf.float32, trainable=True)
    learning_rate = tf.constant(lr, dtype=tf.float32)
    for step in range(steps):
        with tf.GradientTape() as tape:
            mse = tf.reduce_mean(tf.square(tf.einsum("nd,d->n", x, weights) - y))
        gradient = tape.gradient(mse, weights)
        weights.assign(weights - learning_rate * gradient)
    return weights.read_value()
''',
    # an input_signature with unknown n and d: one trace for every shape
    "tf_loss_and_grad_graph": '''
@tf.function(input_signature=[
    tf.TensorSpec(shape=[None], dtype=tf.float32),        # w: (d,)
    tf.TensorSpec(shape=[None, None], dtype=tf.float32),  # x: (n, d)
    tf.TensorSpec(shape=[None], dtype=tf.float32),        # y: (n,)
])
def tf_loss_and_grad_graph(w, x, y):
    return tf_loss_and_grad(w, x, y)
''',
}


@pytest.mark.parametrize("answers", [ALTERNATIVES, ALTERNATIVES_STRUCTURE, ALTERNATIVES_STYLE],
                         ids=["api", "structure", "style"])
def test_correct_alternative_answers_pass(course, tmp_path, zygote, answers):
    nb = notebook_with(course.module("01_tensors").solution, answers, tmp_path / "alt.ipynb")
    result = run_check("01_tensors", notebook=nb, course=course, zygote=zygote)
    assert result.passed, result.summary()
