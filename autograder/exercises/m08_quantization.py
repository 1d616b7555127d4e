"""Checks for module 08, "Deployment and quantization".

The student quantizes the same small float MLP (64 -> 256 -> ReLU -> 10, on flattened 8x8 digits) in both
frameworks: `quantize_torch` with torch.ao.quantization dynamic quantization, `to_tflite` with the TFLite
converter's post-training quantization; then writes each to a file (`save_quantized`, `export_tflite`).

Ground truth comes from here and from the clean reference worker, never from what the student's process says;
every model is judged by an artifact, loaded and run by a fresh confined worker that runs no notebook code, only the
grader's loaders (autograder/worker/m08_quantization.py). Never the reference worker, which is unconfined and can
read the solutions: a crafted file is untrusted input to a parser.
- The float weights are fitted here, in the parent, on every run (random ReLU features + a ridge-regression
  read-out: one linear solve, ~96 % test accuracy, no framework needed), so both frameworks get the SAME float
  model. Test images are drawn with a fresh seed each run; accuracy is computed here from the verifier's logits.
- quantize_torch's model is judged by its state_dict: its bytes come back here (their length is the size gated),
  and the verifier loads them with torch.load(weights_only=True) into quantize_dynamic's copy of the MLP, strictly,
  so they must hold every Linear's int8 weights; its logits are the verifier's. The model's own logits in the
  student's process must merely agree with them. (A model whose state_dict() said less than it computes, or a
  patched torch.save, used to pass the size gate as a float model.)
- A TFLite flatbuffer is data: the student's function returns its bytes (as a uint8 array); the verifier parses
  it in its own tf.lite.Interpreter, builtin ops only, holds its op list to TFLITE_OPS and runs it.
- A PyTorch file is data too: the verifier reloads it (torch.jit.load, or torch.load(weights_only=True) of a
  state_dict into the grader's own quantized skeleton) and compares it with its own quantize_dynamic.
- Sizes: PyTorch's are serialized state_dict bytes (float: measured in the reference worker); TFLite's are the
  flatbuffer's length against the float32 weights' 4 bytes per parameter (a float TFLite file is ~1.5 KB more).

Tolerances, measured on 4 seeds (1000 fresh test images each) with the solution on CPU:
- size: torch state_dict 79,069 -> 23,565 bytes per-tensor (3.36x, set by the shapes, not the values), 28,607
  per-channel (2.76x): the verifier reads every Linear's weight dtype (a float layer fails, named: quantizing only
  the first Linear gives 30,677 bytes, too close to per-channel for a size rule), and the file may weigh at most
  TORCH_SIZE_SLACK x the per-channel model's, measured in the reference worker; TFLite dynamic range 24,824 bytes
  (3.10x of 76,840), full integer 28,496 bytes (2.70x: int32 biases, per-channel scales, QUANTIZE/DEQUANTIZE)
  -> require >= 2.5x.
- accuracy: float 95.4-96.5 %. Accuracy lost to quantization, over 3000 seeds (torch) and 150 (TFLite, each kind):
  torch mean 0.22 points, 99th percentile 1.2, worst 2.5 (a limit of 2 failed one CI run); TFLite
  dynamic range worst 0.9, full integer 1.1 -> require >= float - 4 points.
- a quantized copy of the model given, not of another: top-1 agreement with float cannot tell them apart (honest
  torch copies down to 95.9 %, median 98.8 %, but a float model fitted on other digits agrees 91.1-95.9 %, 300 seeds),
  their logits can: mean |logit - float logit| is at most 0.154 for torch (1000 seeds) and 0.079 for TFLite (150
  seeds each kind), at least 0.475 for another model -> require <= 0.30.
- quant_agree: torch vs TFLite quantized logits over 150 seeds (both TFLite kinds alike): top-1 agreement 96.0 % at
  worst (median 98.7 %, first percentile 97.2); mean |diff| up to 0.171; 99th percentile up to 0.606 (4 seeds had
  shown 0.26-0.38); max 0.40-2.1 (full-integer clips the few activations outside the range its
  representative data calibrated). Justification: both round weights to int8 with a per-tensor (torch, step
  max|W|/127.5) or per-channel (TFLite, max|W_row|/127) step. The read-out layer's max|W2| is 4.6-5.1 (a ridge
  read-out has large weights), a step of ~0.036-0.040; uniform rounding (RMS step/sqrt(12)) over ~122-132 active
  hidden units (||h|| ~ 7-8) predicts an RMS logit error of step*||h||/sqrt(12) = 0.075-0.084 from weights alone,
  measured 0.07-0.15 (mean |diff|) for torch vs float and 0.04-0.08 for TFLite vs float (per-channel steps are
  smaller). torch also rounds each batch's activations with one uint8 scale (reduce_range on x86), TFLite each row's;
  these roundings are independent, so the torch-TFLite difference is about the sum. Limits at ~2x the worst
  measurement: mean |diff| <= 0.35, 99th percentile <= 1.2, top-1 agreement >= 93 %; the max is not judged.
  Two float models pass these trivially, so quant_agree first requires both models to be quantized (the size gates).

On CUDA: dynamically quantized Linear layers run on CPU only (fbgemm/qnnpack kernels), so the grader's worker code
moves inputs to the CPU and the torch parts judge CPU execution on any machine; the TFLite interpreter is CPU-only too.
"""
from __future__ import annotations

import numpy as np

from autograder.spec import bad_file, digits

D_IN, HIDDEN, N_CLASSES = 64, 256, 10
FLOAT_TFLITE_WEIGHT_BYTES = 4 * (D_IN * HIDDEN + HIDDEN + HIDDEN * N_CLASSES + N_CLASSES)  # 76,840
TFLITE_MIN_RATIO = 2.5
# A PyTorch state_dict may exceed the per-channel int8 model's by this factor: per-tensor int8 is 23,565 bytes and
# per-channel 28,607 here (the float model 79,069), so 5 % covers longer key names, not a float layer (30,677).
TORCH_SIZE_SLACK = 1.05
ACC_DROP_POINTS, MAX_MEAN_ABS_VS_FLOAT = 4.0, 0.30
AGREE_MIN, AGREE_MEAN_ABS, AGREE_P99 = 0.93, 0.35, 1.2
N_TEST, N_REP = 1000, 200
TFLITE_OPS = {"FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE", "RELU", "RESHAPE", "ADD", "MUL", "SOFTMAX",
              "BATCH_MATMUL", "TRANSPOSE", "CAST", "DELEGATE"}

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


def _torch_quantized(ctx, verifier, weights, x, part: str = "") -> tuple[np.ndarray, int, int]:
    """quantize_torch's model, judged by its state_dict: the size of those bytes (gated), and the logits on x that
    the fresh `verifier` computes from them alone, loaded into quantize_dynamic's copy of the MLP. Returns those
    logits, the size and the float model's size."""
    out = _status(ctx, ctx.call("@torch_quantized", [*weights, x], "torch", blame="quantize_torch"), "quantize_torch")
    if isinstance(out, str):
        ctx.fail(f"quantize_torch {out}")
    own_logits, blob = out["items"]
    blob = np.asarray(blob["array"], np.uint8)
    float_size = int(ctx.call_reference("@torch_float_size", weights, "torch")["array"])
    got = ctx.fresh_call(verifier, "@torch_state_logits", [blob, x], "numpy",
                         "loading the state_dict of quantize_torch's model in a fresh process")
    if got.get("type") == "str":
        kind, _, rest = got["value"].partition(" ")
        if kind == "float":
            layers = rest.split("; ")
            why = ("nothing was quantized: quantize_dynamic replaces only the module types named in qconfig_spec, "
                   "and this MLP's layers are nn.Linear (nn.Conv2d, say, matches nothing here)"
                   if all("float" in layer for layer in layers) else
                   "every nn.Linear must hold int8 weights (per-tensor or per-channel): pass nn.Linear itself to "
                   "quantize_dynamic, not one layer")
            ctx.fail(f"{part}the state_dict of quantize_torch's model holds these Linear weights: {rest}; {why}")
        if kind == "nostate":
            ctx.fail(f"the state_dict of quantize_torch's model does not load into quantize_dynamic's copy of the MLP "
                     f"({rest}): return the model that torch.ao.quantization.quantize_dynamic gives, every nn.Linear "
                     f"quantized to qint8")
        ctx.fail(f"the state_dict of quantize_torch's model cannot be read back without running code ({rest}): "
                 f"return the model that torch.ao.quantization.quantize_dynamic gives")
    int8_size = int(ctx.call_reference("@torch_int8_size", weights, "torch")["array"])
    _torch_size_gate(ctx, blob.size, float_size, int8_size, part)
    logits = _array(got)
    apart = float(np.abs(_array(own_logits) - logits).max())
    ctx.details["own_vs_state_dict"] = apart
    if apart > 1e-4:
        ctx.fail(f"quantize_torch's model and its own state_dict, reloaded in a fresh process, give logits up to "
                 f"{apart:.3g} apart on {len(x)} digits: return the quantized model itself, whose forward pass is "
                 f"the one its weights describe")
    return logits, blob.size, float_size


def _torch_size_gate(ctx, size: int, float_size: int, int8_size: int, part: str = "") -> None:
    """Every Linear is int8 by now (the verifier read the tensors); the file may weigh at most what int8 weights
    weigh with a scale and zero point per output channel (the heavier of the two correct schemes), plus slack for
    key names (a model that wraps the MLP)."""
    budget = int(int8_size * TORCH_SIZE_SLACK)
    ratio = float_size / size
    ctx.details.update(torch_bytes=size, torch_float_bytes=float_size, torch_int8_bytes=int8_size, torch_ratio=ratio)
    if size > budget:
        ctx.fail(f"{part}the quantized model's state_dict is {size:,} bytes: its int8 weights weigh {int8_size:,} "
                 f"bytes with per-channel scales (the float model {float_size:,}), so it holds {size - int8_size:,} "
                 f"bytes more than quantized weights need: return quantize_dynamic's model itself, nothing beside it")


def _tflite_blob(ctx, fn: str, weights, rep) -> np.ndarray:
    """The flatbuffer the student's `fn` made of the grader's Keras model (to_tflite returns it, export_tflite
    writes it): bytes only, judged elsewhere."""
    out = _status(ctx, ctx.call(f"@{fn}", [*weights, rep], "numpy", blame=fn), fn)
    if isinstance(out, str):
        if bad_file(fn, out):
            ctx.fail(bad_file(fn, out))
        if out.startswith("nofile"):
            ctx.fail(f"{fn} wrote nothing at {out.split()[1]}: write the flatbuffer's bytes to the path you are "
                     f"given, open(path, 'wb').write(flatbuffer)")
        ctx.fail(f"{fn}: {out}")
    return np.asarray(out["array"], np.uint8)


def _run_tflite(ctx, verifier, blob: np.ndarray, x: np.ndarray, fn: str, from_file: int) -> np.ndarray:
    """The flatbuffer in the fresh verifier's interpreter: its ops held to TFLITE_OPS there, before it runs."""
    out = ctx.fresh_call(verifier, "@run_tflite", [blob, x, from_file, ",".join(sorted(TFLITE_OPS))], "numpy",
                         f"the grader's TFLite interpreter failed on the flatbuffer from {fn}")
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
    with ctx.fresh_worker(["torch"]) as verifier:
        logits, size, float_size = _torch_quantized(ctx, verifier, weights, x)
    verdict = _accuracy_verdict(ctx, logits, weights, x, y, "quantize_torch's model")
    return (f"{float_size / size:.2f}x smaller ({size:,} vs {float_size:,} bytes); {verdict} (its state_dict, reloaded "
            f"in a fresh process, on the CPU)")


def _tflite_judged(ctx, fn: str, from_file: int, what: str) -> tuple[int, str]:
    """A fresh float model fitted here, the student's `fn` converts it, the grader's interpreter runs the
    flatbuffer on fresh digits: its size (gated) and the accuracy verdict."""
    weights = _fit(ctx.rng)
    rep, _ = _data(ctx.rng, N_REP)
    x, y = _data(ctx.rng, N_TEST)
    with ctx.fresh_worker(["tensorflow"]) as verifier:
        blob = _tflite_blob(ctx, fn, weights, rep)
        logits = _run_tflite(ctx, verifier, blob, x, fn, from_file)
    _tflite_size_gate(ctx, blob.size, fn)
    return blob.size, _accuracy_verdict(ctx, logits, weights, x, y, what)


def tflite_quant(ctx):
    size, verdict = _tflite_judged(ctx, "to_tflite", 0, "to_tflite's flatbuffer")
    return (f"{FLOAT_TFLITE_WEIGHT_BYTES / size:.2f}x smaller than the float32 weights ({size:,} bytes); {verdict}, "
            f"run by the grader's interpreter in a fresh process")


def torch_file(ctx):
    weights = _fit(ctx.rng)
    x, _ = _data(ctx.rng, 300)
    # torch.jit.load runs the archive's TorchScript: in a fresh confined worker, never in the reference worker,
    # which is unconfined and can read the solutions.
    with ctx.fresh_worker(["torch"]) as verifier:
        out = ctx.call("@torch_save", weights, "torch", blame="save_quantized")
        if out.get("type") == "str":
            ctx.fail(bad_file("save_quantized", out["value"]) or
                     f"save_quantized(qmodel, path) wrote nothing at {out['value'].split()[1]}: save to the path you "
                     f"are given")
        blob = np.asarray(out["array"], np.uint8)
        ref = ctx.fresh_call(verifier, "@torch_reload", [blob, *weights, x], "numpy",
                             "reloading your file in a fresh process")
    if ref.get("type") == "str":
        kind, _, rest = ref["value"].partition(" ")
        if kind == "noload":
            ctx.fail(f"the grader cannot reload the file save_quantized wrote: torch.jit.load cannot read it, and "
                     f"torch.load(path, weights_only=True) refuses it ({rest[:120]}). torch.save(model, path) pickles "
                     f"the Python object, and unpickling it could run any code; save its state_dict "
                     f"(torch.save(qmodel.state_dict(), path)) or, the legacy way, a TorchScript archive "
                     f"(torch.jit.save(torch.jit.script(qmodel), path))")
        if kind == "notdict":
            ctx.fail(f"save_quantized wrote a {rest}, not a state_dict or a TorchScript archive")
        if kind == "nostate":
            ctx.fail(f"the state_dict that save_quantized wrote does not fit the quantized model ({rest}): save "
                     f"qmodel.state_dict(), the quantized one, not the float model's")
        ctx.fail(f"the reloaded model returns a {rest}, not a tensor")
    got, want, how = ref["items"]
    how = ctx.text(how, "how")
    ctx.details.update(file_bytes=blob.size, reloaded_with=how)
    diff = float(np.abs(_array(got) - _array(want)).max())
    ctx.details["max_abs_err"] = diff
    if diff > 1e-4:
        ctx.fail(f"the model reloaded from save_quantized's file ({how}) differs from the quantized model it was "
                 f"given by up to {diff:.3g} on 300 digits: save qmodel itself (the quantized one you are given), "
                 f"not another model")
    return f"reloaded in a fresh process with {how}: the same logits as the model saved ({blob.size:,} bytes)"


def tflite_file(ctx):
    size, verdict = _tflite_judged(ctx, "export_tflite", 1, "the reloaded .tflite file")
    return f"tf.lite.Interpreter(model_path=...) in a fresh grader process runs the file ({size:,} bytes): {verdict}"


def quant_agree(ctx):
    weights = _fit(ctx.rng)
    rep, _ = _data(ctx.rng, N_REP)
    x, y = _data(ctx.rng, N_TEST)
    gate = "quant_agree compares two QUANTIZED models, and "
    with ctx.fresh_worker(["torch"]) as torch_verifier, ctx.fresh_worker(["tensorflow"]) as tflite_verifier:
        torch_logits, _, _ = _torch_quantized(ctx, torch_verifier, weights, x, gate)
        blob = _tflite_blob(ctx, "to_tflite", weights, rep)
        _tflite_size_gate(ctx, blob.size, "to_tflite", gate)
        tflite_logits = _run_tflite(ctx, tflite_verifier, blob, x, "to_tflite", 0)
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
