"""Checks for module 08, "Deployment and quantization".

The student quantizes the same small float MLP (64 -> 256 -> ReLU -> 10, on flattened 8x8 digits) in both
frameworks: `quantize_torch` with torch.ao.quantization dynamic quantization, `to_tflite` with the TFLite
converter's post-training quantization; then writes each to a file (`save_quantized`, `export_tflite`).

Ground truth comes from here and from the clean reference worker, never from what the student's process says:
- The float weights are fitted here, in the parent, on every run (random ReLU features + a ridge-regression
  read-out: one linear solve, ~96 % test accuracy, no framework needed), so both frameworks get the SAME float
  model. Test images are drawn with a fresh seed each run; accuracy is computed here from returned logits.
- A TFLite flatbuffer is data: the student's function returns its bytes (as a uint8 array), and a fresh confined
  worker that runs only the grader's code parses it in its own tf.lite.Interpreter, builtin ops only, checks its
  op list and runs it. Never the reference worker, which is unconfined and can read the solutions: a crafted
  flatbuffer is untrusted input to the interpreter's parser.
- A PyTorch file is data too: a fresh confined worker that runs only the grader's code reloads it (torch.jit.load,
  or torch.load(weights_only=True) of a state_dict into the grader's own quantized skeleton) and compares it with
  its own quantize_dynamic.
- Sizes: PyTorch's are serialized state_dict bytes (float: measured in the reference worker); TFLite's are the
  flatbuffer's length against the float32 weights' 4 bytes per parameter (a float TFLite file is ~1.5 KB more).

Tolerances, measured on 4 seeds (1000 fresh test images each) with the solution on CPU:
- size: torch state_dict 79,069 -> 23,565 bytes (3.36x, set by the shapes, not the values) -> require >= 3x
  (quantizing only the first Linear gives ~2.6x and fails); TFLite dynamic range 24,824 bytes (3.10x of 76,840),
  full integer 28,496 bytes (2.70x: int32 biases, per-channel scales, QUANTIZE/DEQUANTIZE) -> require >= 2.5x.
- accuracy: float 95.4-96.5 %. Accuracy lost to quantization, over 3000 seeds (torch) and 150 (TFLite, each kind):
  torch mean 0.22 points, 99th percentile 1.2, worst 2.5 (a limit of 2 failed one CI run); TFLite
  dynamic range worst 0.9, full integer 1.1 -> require >= float - 4 points.
- a quantized copy of the model given, not of another: top-1 agreement with float cannot tell them apart (honest
  torch copies down to 95.9 %, median 98.8 %, but a float model fitted on other digits agrees 91.1-95.9 %, 300 seeds), their logits
  can: mean |logit - float logit| is at most 0.154 for torch (1000 seeds) and 0.079 for TFLite (150 seeds each
  kind), at least 0.475 for another model -> require <= 0.30.
- quant_agree: torch vs TFLite quantized logits over 150 seeds (both TFLite kinds alike): top-1 agreement 96.0 % at worst
  (median 98.7 %, first percentile 97.2); mean |diff| up to 0.171; 99th percentile up to 0.606 (4 seeds had shown 0.26-0.38);
  max 0.40-2.1 (full-integer clips the few activations outside the range its
  representative data calibrated). Justification: both round weights to int8 with a per-tensor (torch, step
  max|W|/127.5) or per-channel (TFLite, max|W_row|/127) step. The read-out layer's max|W2| is 4.6-5.1 (a ridge
  read-out has large weights), a step of ~0.036-0.040; uniform rounding (RMS step/sqrt(12)) over ~122-132 active
  hidden units (||h|| ~ 7-8) predicts an RMS logit error of step*||h||/sqrt(12) = 0.075-0.084 from weights alone,
  measured 0.07-0.15 (mean |diff|) for torch vs float and 0.04-0.08 for TFLite vs float (per-channel steps are
  smaller). torch also rounds each batch's activations with one uint8 scale (reduce_range on x86), TFLite each row's;
  these roundings are independent, so the torch-TFLite difference is about the sum. Limits at ~2x the worst
  measurement: mean |diff| <= 0.35, 99th percentile <= 1.2, top-1 agreement >= 93 %; the max is not judged.
  Two float models pass these trivially, so quant_agree first requires both models to be quantized (the size gates).

On CUDA: dynamically quantized Linear layers run on CPU only (fbgemm/qnnpack kernels), so the grader's helpers move
inputs to the CPU and the torch parts judge CPU execution on any machine; the TFLite interpreter is CPU-only too.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from autograder.datasets import digits

D_IN, HIDDEN, N_CLASSES = 64, 256, 10
FLOAT_TFLITE_WEIGHT_BYTES = 4 * (D_IN * HIDDEN + HIDDEN + HIDDEN * N_CLASSES + N_CLASSES)  # 76,840
TORCH_MIN_RATIO, TFLITE_MIN_RATIO = 3.0, 2.5
ACC_DROP_POINTS, MAX_MEAN_ABS_VS_FLOAT = 4.0, 0.30
AGREE_MIN, AGREE_MEAN_ABS, AGREE_P99 = 0.93, 0.35, 1.2
N_TEST, N_REP = 1000, 200
TFLITE_OPS = {"FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE", "RELU", "RESHAPE", "ADD", "MUL", "SOFTMAX",
              "BATCH_MATMUL", "TRANSPOSE", "CAST", "DELEGATE"}

TORCH_HELPERS = '''
import io as _clash_io
import os as _clash_os
import warnings as _clash_warnings
import numpy as _clash_np
import torch
from torch import nn

_clash_torch_state = {"saves": 0, "loads": 0}


def _clash_float_model(w1, b1, w2, b2):
    """The grader's float MLP (on the CPU: quantized kernels are CPU-only)."""
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        for p, w in zip(model.parameters(), (w1, b1, w2, b2)):
            p.copy_(w.detach().float().cpu())
    return model.eval()


def _clash_grader_quantized(w1, b1, w2, b2):
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(_clash_float_model(w1, b1, w2, b2), {nn.Linear},
                                                      dtype=torch.qint8)


def _clash_serialized(obj):
    buf = _clash_io.BytesIO()
    torch.save(obj, buf)
    return _clash_np.frombuffer(buf.getvalue(), _clash_np.uint8).copy()


def _clash_torch_float_size(w1, b1, w2, b2):
    return int(_clash_serialized(_clash_float_model(w1, b1, w2, b2).state_dict()).size)


def _clash_torch_quant(w1, b1, w2, b2, x):
    """The student's quantize_torch on the grader's float model: its logits on x and its state_dict's bytes."""
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        q = quantize_torch(_clash_float_model(w1, b1, w2, b2))
        if q is None:
            return "returned None (a missing return statement?)"
        if not isinstance(q, nn.Module):
            return f"returned a {type(q).__name__}, not a model: return the quantized nn.Module itself"
        with torch.no_grad():
            out = q(x.cpu())
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], 10):
            return f"returned a model whose output is not a (n, 10) tensor of logits"
        return out.float(), _clash_serialized(q.state_dict())


def _clash_torch_save(w1, b1, w2, b2):
    """The grader quantizes its own model; the student's save_quantized writes it; the bytes go to the reference."""
    _clash_torch_state["saves"] += 1
    path = f"m08_quantized_{_clash_torch_state['saves']}.pt"
    q = _clash_grader_quantized(w1, b1, w2, b2)
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        save_quantized(q, path)
    if not _clash_os.path.isfile(path):
        return f"nofile {path}"
    with open(path, "rb") as f:
        return _clash_np.frombuffer(f.read(), _clash_np.uint8).copy()


def _clash_torch_reload(blob, w1, b1, w2, b2, x):
    """Fresh worker: reload the student's file and run it; run the grader's own quantized model beside it."""
    _clash_torch_state["loads"] += 1
    path = f"m08_reload_{_clash_torch_state['loads']}.pt"
    with open(path, "wb") as f:
        f.write(blob.cpu().numpy().tobytes())
    mine = _clash_grader_quantized(w1, b1, w2, b2)
    with _clash_warnings.catch_warnings():
        _clash_warnings.simplefilter("ignore")
        how = "torch.jit.load"
        try:
            loaded = torch.jit.load(path, map_location="cpu")
        except Exception as jit_error:
            how = "torch.load(weights_only=True) + load_state_dict"
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                return f"noload {type(e).__name__}: {first}"
            if not isinstance(obj, dict):
                return f"notdict {type(obj).__name__}"
            loaded = _clash_grader_quantized(w1, b1, w2, b2)
            try:
                loaded.load_state_dict(obj)
            except Exception as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                return f"nostate {type(e).__name__}: {first}"
        with torch.no_grad():
            got = loaded(x.cpu())
            want = mine(x.cpu())
    if not isinstance(got, torch.Tensor):
        return f"notensor {type(got).__name__}"
    return got.float(), want, how
'''

TF_HELPERS = '''
import contextlib as _clash_contextlib
import io as _clash_tf_io
import os as _clash_tf_os
import warnings as _clash_tf_warnings
import numpy as _clash_tf_np
import tensorflow as tf

_clash_tf_state = {"exports": 0, "runs": 0}
_CLASH_TFLITE_OPS = TFLITE_OPS_SET


def _clash_keras_model(w1, b1, w2, b2):
    """The grader's float MLP as Keras: Dense kernels are (in, out), the transpose of Linear.weight."""
    import keras
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10)])
    model.layers[0].set_weights([w1.numpy().T, b1.numpy()])
    model.layers[1].set_weights([w2.numpy().T, b2.numpy()])
    return model


def _clash_as_blob(fb, fn):
    if fb is None:
        return f"{fn} returned None (a missing return statement?)"
    if isinstance(fb, (bytes, bytearray, memoryview)):
        return _clash_tf_np.frombuffer(bytes(fb), _clash_tf_np.uint8).copy()
    return (f"{fn} returned a {type(fb).__name__}, not the flatbuffer: return the bytes that "
            f"converter.convert() gives")


def _clash_to_tflite(w1, b1, w2, b2, rep):
    """The student's to_tflite on the grader's Keras model; the flatbuffer comes back as uint8 data."""
    model = _clash_keras_model(w1, b1, w2, b2)
    with _clash_tf_warnings.catch_warnings():
        _clash_tf_warnings.simplefilter("ignore")
        fb = to_tflite(model, rep.numpy())
    return _clash_as_blob(fb, "to_tflite")


def _clash_export_tflite(w1, b1, w2, b2, rep):
    """The student's export_tflite writes a .tflite file; its bytes go to the reference worker."""
    _clash_tf_state["exports"] += 1
    path = f"m08_model_{_clash_tf_state['exports']}.tflite"
    model = _clash_keras_model(w1, b1, w2, b2)
    with _clash_tf_warnings.catch_warnings():
        _clash_tf_warnings.simplefilter("ignore")
        export_tflite(model, rep.numpy(), path)
    if not _clash_tf_os.path.isfile(path):
        return f"nofile {path}"
    with open(path, "rb") as f:
        return _clash_tf_np.frombuffer(f.read(), _clash_tf_np.uint8).copy()


def _clash_run_tflite(blob, x, from_file):
    """A fresh worker: run a flatbuffer in the TFLite interpreter (builtin ops only, no delegates) on x."""
    data = blob.numpy().tobytes()
    x = x.numpy()
    kwargs = {"experimental_op_resolver_type": tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if int(from_file):
        _clash_tf_state["runs"] += 1
        path = f"m08_reload_{_clash_tf_state['runs']}.tflite"
        with open(path, "wb") as f:
            f.write(data)
        kwargs["model_path"] = path
    else:
        kwargs["model_content"] = data
    with _clash_tf_warnings.catch_warnings():
        _clash_tf_warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        try:
            it = tf.lite.Interpreter(**kwargs)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            return f"invalid {type(e).__name__}: {first}"
        try:
            ops = sorted({d["op_name"] for d in it._get_ops_details()})
        except Exception:
            ops = []
        extra = [op for op in ops if op not in _CLASH_TFLITE_OPS]
        if extra:
            return f"ops {extra}"
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            return f"arity {len(inputs)} inputs and {len(outputs)} outputs"
        inp, out = inputs[0], outputs[0]
        if list(inp["shape"])[-1:] != [64]:
            return f"shape input of shape {list(inp['shape'])}"
        try:
            it.resize_tensor_input(inp["index"], [len(x), 64])
            it.allocate_tensors()
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            return f"invalid {type(e).__name__}: {first}"
        if inp["dtype"] in (_clash_tf_np.int8, _clash_tf_np.uint8):  # full-integer model with integer inputs
            scale, zero = inp["quantization"]
            info = _clash_tf_np.iinfo(inp["dtype"])
            x = _clash_tf_np.clip(_clash_tf_np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] in (_clash_tf_np.int8, _clash_tf_np.uint8):
            scale, zero = out["quantization"]
            y = (y.astype(_clash_tf_np.float32) - zero) * scale
    if tuple(y.shape) != (len(x), 10):
        return f"shape output of shape {list(y.shape)}"
    return y.astype(_clash_tf_np.float32), ",".join(ops)
'''.replace("TFLITE_OPS_SET", repr(sorted(TFLITE_OPS)).replace("[", "{").replace("]", "}"))

HELPERS = [TORCH_HELPERS, TF_HELPERS]
BASELINE = ""  # no timed part


# -- the float model and the data, here in the parent -------------------------------------------------------
def _fit(rng: np.random.Generator, n: int = 2000, lam: float = 0.1) -> list[np.ndarray]:
    """A float MLP fitted in one linear solve: random ReLU features, then a ridge-regression read-out."""
    x, y = digits(n, seed=int(rng.integers(2**31)))
    x = x.reshape(n, -1).astype(np.float64)
    w1 = rng.normal(0.0, np.sqrt(2.0 / D_IN), (HIDDEN, D_IN))
    b1 = rng.normal(0.0, 0.5, HIDDEN)
    h = np.hstack([np.maximum(x @ w1.T + b1, 0.0), np.ones((n, 1))])
    target = 4.0 * np.eye(N_CLASSES)[y] - 2.0
    s = np.linalg.solve(h.T @ h + lam * np.eye(HIDDEN + 1), h.T @ target)
    return [a.astype(np.float32) for a in (w1, b1, s[:-1].T, s[-1])]


def _float_logits(weights, x) -> np.ndarray:
    w1, b1, w2, b2 = (a.astype(np.float64) for a in weights)
    return np.maximum(x.astype(np.float64) @ w1.T + b1, 0.0) @ w2.T + b2


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits(n, seed=int(rng.integers(2**31)))
    return x.reshape(n, -1), y


def _array(leaf: dict) -> np.ndarray:
    return np.asarray(leaf["array"], dtype=np.float64)


def _status(ctx, output: dict, fn: str):
    """A helper answers a str when something is wrong; turn it into one line, or return the items."""
    if output.get("type") == "str":
        text = output["value"]
        if text.startswith(fn) or text.startswith("returned"):
            ctx.fail(text if text.startswith(fn) else f"{fn} {text}")
        return text
    return output


def _accuracy_verdict(ctx, logits: np.ndarray, weights, x, y, what: str) -> str:
    float_logits = _float_logits(weights, x)
    acc_f = float((float_logits.argmax(1) == y).mean())
    acc_q = float((logits.argmax(1) == y).mean())
    agree = float((logits.argmax(1) == float_logits.argmax(1)).mean())
    moved = float(np.abs(logits - float_logits).mean())
    ctx.details.update(float_accuracy=acc_f, quantized_accuracy=acc_q, agreement_with_float=agree,
                       mean_abs_diff_vs_float=moved)
    if not np.isfinite(logits).all():
        ctx.fail(f"{what} returns NaN or infinite logits")
    if acc_q < acc_f - ACC_DROP_POINTS / 100:
        ctx.fail(f"{what} reaches {100 * acc_q:.1f} % on {len(y)} fresh digits, the float model {100 * acc_f:.1f} %: "
                 f"more than {ACC_DROP_POINTS:g} points lost. int8 with a scale per tensor should cost well under a "
                 f"point here: was the model quantized from the float model you were given?")
    if moved > MAX_MEAN_ABS_VS_FLOAT:
        ctx.fail(f"{what}'s logits are {moved:.2f} from the float model's on average over {len(y)} fresh digits (at "
                 f"most {MAX_MEAN_ABS_VS_FLOAT:g} expected; int8 rounding moves them by about 0.1 here): it is not a "
                 f"quantized copy of the model you were given")
    return f"{100 * acc_q:.1f} % vs float {100 * acc_f:.1f} % on {len(y)} fresh digits, logits {moved:.3f} from " \
           f"float's on average, same prediction as float on {100 * agree:.1f} %"


def _torch_quantized(ctx, weights, x) -> tuple[np.ndarray, int, int]:
    """The student's quantized model: logits on x, its state_dict's size, the float model's size."""
    out = _status(ctx, ctx.call("_clash_torch_quant", [*weights, x], "torch"), "quantize_torch")
    if isinstance(out, str):
        ctx.fail(f"quantize_torch {out}")
    logits, blob = out["items"]
    float_size = int(ctx.call_reference("_clash_torch_float_size", weights, "torch")["array"])
    return _array(logits), int(np.asarray(blob["array"]).size), float_size


def _torch_size_gate(ctx, size: int, float_size: int, part: str = "") -> None:
    ratio = float_size / size
    ctx.details.update(torch_bytes=size, torch_float_bytes=float_size, torch_ratio=ratio)
    if ratio < TORCH_MIN_RATIO:
        if ratio < 1.2:
            why = ("it is the size of the float model, so nothing was quantized: quantize_dynamic replaces only the "
                   "module types named in qconfig_spec, and this MLP's layers are nn.Linear (nn.Conv2d, say, matches "
                   "nothing here)")
        else:
            why = "some weights are still float32: quantize every nn.Linear, not just one of them"
        ctx.fail(f"{part}the quantized model's state_dict is {size:,} bytes, the float model's {float_size:,}: only "
                 f"{ratio:.2f}x smaller, at least {TORCH_MIN_RATIO:g}x expected (int8 weights are a quarter of "
                 f"float32); {why}")


def _tflite_blob(ctx, fn: str, helper: str, weights, rep) -> dict:
    out = _status(ctx, ctx.call(helper, [*weights, rep], "tensorflow"), fn)
    if isinstance(out, str):
        if out.startswith("nofile"):
            ctx.fail(f"{fn} wrote nothing at {out.split()[1]}: write the flatbuffer's bytes to the path you are "
                     f"given, open(path, 'wb').write(flatbuffer)")
        ctx.fail(f"{fn}: {out}")
    return out


@contextmanager
def _tflite_runner(ctx):
    """A fresh confined worker with the grader's TFLite helpers; it starts (imports TensorFlow) while the
    student's worker converts."""
    worker = ctx.fresh_worker([{"label": "course m08 tflite runner", "source": TF_HELPERS}], ["tensorflow"])
    try:
        yield worker
    finally:
        worker.close()


def _run_tflite(ctx, worker, blob: dict, x: np.ndarray, fn: str, from_file: int) -> np.ndarray:
    out = ctx.fresh_call(worker, "_clash_run_tflite", [np.asarray(blob["array"], np.uint8), x, from_file],
                         "tensorflow", f"the grader's TFLite interpreter failed on the flatbuffer from {fn}")
    if out.get("type") == "str":
        kind, _, rest = out["value"].partition(" ")
        if kind == "invalid":
            ctx.fail(f"the TFLite interpreter cannot load what {fn} produced ({rest}): return (or write) exactly the "
                     f"bytes that converter.convert() gives")
        if kind == "ops" and "VAR_HANDLE" in rest:
            ctx.fail(f"the flatbuffer from {fn} holds no weights: it reads them from resource variables "
                     f"(VAR_HANDLE, READ_VARIABLE) that are empty when another process loads it. "
                     f"TFLiteConverter.from_concrete_functions([fn], keras_model) keeps a Keras 3 model's variables "
                     f"as variables; from_keras_model(keras_model) freezes them into the file")
        if kind == "ops":
            ctx.fail(f"the flatbuffer from {fn} uses ops {rest}, which the grader's interpreter does not run (builtin "
                     f"ops of a Dense model only): convert the Keras model you are given, without select TF ops")
        ctx.fail(f"the flatbuffer from {fn} does not take a (n, 64) batch to (n, 10) logits ({rest})")
    logits, ops = out["items"]
    ctx.details["tflite_ops"] = ctx.text(ops, "ops")
    return _array(logits)


def _tflite_size_gate(ctx, size: int, fn: str, part: str = "") -> None:
    ratio = FLOAT_TFLITE_WEIGHT_BYTES / size
    ctx.details.update(tflite_bytes=size, tflite_ratio=ratio)
    if ratio < TFLITE_MIN_RATIO:
        ctx.fail(f"{part}the flatbuffer from {fn} is {size:,} bytes; the float32 weights alone are "
                 f"{FLOAT_TFLITE_WEIGHT_BYTES:,}: only {ratio:.2f}x smaller, at least {TFLITE_MIN_RATIO:g}x expected. "
                 f"Without converter.optimizations = [tf.lite.Optimize.DEFAULT] the converter keeps float32 weights")


# -- the parts -------------------------------------------------------------------------------------------
def torch_quant(ctx):
    weights = _fit(ctx.rng)
    x, y = _data(ctx.rng, N_TEST)
    logits, size, float_size = _torch_quantized(ctx, weights, x)
    _torch_size_gate(ctx, size, float_size)
    verdict = _accuracy_verdict(ctx, logits, weights, x, y, "quantize_torch's model")
    return f"{float_size / size:.2f}x smaller ({size:,} vs {float_size:,} bytes); {verdict} (on the CPU)"


def _tflite_judged(ctx, fn: str, helper: str, how: int, what: str) -> tuple[int, str]:
    """A fresh float model fitted here, the student's `fn` converts it, the grader's interpreter runs the
    flatbuffer on fresh digits: its size (gated) and the accuracy verdict."""
    weights = _fit(ctx.rng)
    rep, _ = _data(ctx.rng, N_REP)
    x, y = _data(ctx.rng, N_TEST)
    with _tflite_runner(ctx) as worker:
        blob = _tflite_blob(ctx, fn, helper, weights, rep)
        logits = _run_tflite(ctx, worker, blob, x, fn, how)
    size = int(np.asarray(blob["array"]).size)
    _tflite_size_gate(ctx, size, fn)
    return size, _accuracy_verdict(ctx, logits, weights, x, y, what)


def tflite_quant(ctx):
    size, verdict = _tflite_judged(ctx, "to_tflite", "_clash_to_tflite", 0, "to_tflite's flatbuffer")
    return (f"{FLOAT_TFLITE_WEIGHT_BYTES / size:.2f}x smaller than the float32 weights ({size:,} bytes); {verdict}, "
            f"run by the grader's interpreter in a fresh process")


def torch_file(ctx):
    weights = _fit(ctx.rng)
    x, _ = _data(ctx.rng, 300)
    out = ctx.call("_clash_torch_save", weights, "torch")
    if out.get("type") == "str":
        ctx.fail(f"save_quantized(qmodel, path) wrote nothing at {out['value'].split()[1]}: save to the path you "
                 f"are given")
    size = int(np.asarray(out["array"]).size)
    # torch.jit.load runs the archive's TorchScript: in a fresh confined worker, never in the reference worker,
    # which is unconfined and can read the solutions.
    worker = ctx.fresh_worker([{"label": "course m08 loader", "source": TORCH_HELPERS}], ["torch"])
    try:
        ref = ctx.fresh_call(worker, "_clash_torch_reload", [np.asarray(out["array"], np.uint8), *weights, x],
                             "torch", "reloading your file in a fresh process")
    finally:
        worker.close()
    if ref.get("type") == "str":
        kind, _, rest = ref["value"].partition(" ")
        if kind == "noload":
            ctx.fail(f"the grader cannot reload the file save_quantized wrote: torch.jit.load cannot read it, and "
                     f"torch.load(path, weights_only=True) refuses it ({rest[:120]}). torch.save(model, path) pickles "
                     f"the Python object, and unpickling it could run any code; save a scripted model "
                     f"(torch.jit.save(torch.jit.script(qmodel), path)) or its state_dict")
        if kind == "notdict":
            ctx.fail(f"save_quantized wrote a {rest}, not a state_dict or a TorchScript archive")
        if kind == "nostate":
            ctx.fail(f"the state_dict that save_quantized wrote does not fit the quantized model ({rest}): save "
                     f"qmodel.state_dict(), the quantized one, not the float model's")
        ctx.fail(f"the reloaded model returns a {rest}, not a tensor")
    got, want, how = ref["items"]
    how = ctx.text(how, "how")
    ctx.details.update(file_bytes=size, reloaded_with=how)
    diff = float(np.abs(_array(got) - _array(want)).max())
    ctx.details["max_abs_err"] = diff
    if diff > 1e-4:
        ctx.fail(f"the model reloaded from save_quantized's file ({how}) differs from the quantized model it was "
                 f"given by up to {diff:.3g} on 300 digits: save qmodel itself (the quantized one you are given), "
                 f"not another model")
    return f"reloaded in a fresh process with {how}: the same logits as the model saved ({size:,} bytes)"


def tflite_file(ctx):
    size, verdict = _tflite_judged(ctx, "export_tflite", "_clash_export_tflite", 1, "the reloaded .tflite file")
    return f"tf.lite.Interpreter(model_path=...) in a fresh grader process runs the file ({size:,} bytes): {verdict}"


def quant_agree(ctx):
    weights = _fit(ctx.rng)
    rep, _ = _data(ctx.rng, N_REP)
    x, y = _data(ctx.rng, N_TEST)
    with _tflite_runner(ctx) as worker:
        torch_logits, size, float_size = _torch_quantized(ctx, weights, x)
        _torch_size_gate(ctx, size, float_size, "quant_agree compares two QUANTIZED models, and ")
        blob = _tflite_blob(ctx, "to_tflite", "_clash_to_tflite", weights, rep)
        _tflite_size_gate(ctx, int(np.asarray(blob["array"]).size), "to_tflite",
                          "quant_agree compares two QUANTIZED models, and ")
        tflite_logits = _run_tflite(ctx, worker, blob, x, "to_tflite", 0)
    agree = float((torch_logits.argmax(1) == tflite_logits.argmax(1)).mean())
    diff = np.abs(torch_logits - tflite_logits)
    mean, p99 = float(diff.mean()), float(np.quantile(diff, 0.99))
    ctx.details.update(top1_agreement=agree, mean_abs_diff=mean, p99_abs_diff=p99, max_abs_diff=float(diff.max()))
    numbers = (f"top-1 agreement {100 * agree:.1f} %, mean |logit difference| {mean:.3f}, 99th percentile {p99:.3f} "
               f"on {len(x)} fresh digits")
    if agree < AGREE_MIN or mean > AGREE_MEAN_ABS or p99 > AGREE_P99:
        ctx.fail(f"the two quantized models, made from the same float weights, disagree: {numbers}; expected at "
                 f"least {100 * AGREE_MIN:g} %, at most {AGREE_MEAN_ABS:g} and {AGREE_P99:g}. int8 rounding moves a "
                 f"logit by ~0.1 on average here: did both start from the model you were given?")
    return numbers


PARTS = {f.__name__: f for f in (torch_quant, tflite_quant, torch_file, tflite_file, quant_agree)}
