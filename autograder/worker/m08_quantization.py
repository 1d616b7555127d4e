"""Module 08's grader code in the workers: the grader's float MLP in both frameworks, the student's quantizers and
savers called on it, and the loaders a fresh confined verifier runs on what they produced.

Two kinds of function live here. Those that call the student (`torch_quantized`, `torch_save`, `to_tflite`,
`export_tflite`) run in the student's worker and only hand back bytes: a state_dict, a file, a flatbuffer. Those
that judge those bytes (`torch_reload`, `torch_state_logits`, `run_tflite`) run in a fresh worker that runs no
notebook code (`ctx.fresh_worker([framework])`), so nothing the notebook patches reaches them.

A status the parent turns into a teaching sentence comes back as a str ("nofile PATH", "noload ERROR", ...);
anything else is the answer. Quantized kernels are CPU-only (fbgemm/qnnpack), and so is the TFLite interpreter:
inputs move to the CPU here, on any machine.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from autograder.worker import _files

D_IN, HIDDEN, N_CLASSES = 64, 256, 10
_FILES = {"torch_saves": 0, "torch_loads": 0, "tflite_exports": 0, "tflite_runs": 0}  # this worker's file names


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def _next_path(kind: str, suffix: str) -> str:
    _FILES[kind] += 1
    return f"m08_{kind}_{_FILES[kind]}{suffix}"


def _bytes_of(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8).copy()


def _write(blob, suffix: str, kind: str) -> str:
    path = _next_path(kind, suffix)
    with open(path, "wb") as f:
        f.write(np.asarray(blob, np.uint8).tobytes())
    return path


# -- PyTorch ------------------------------------------------------------------------------------------------
def _float_model(w1=None, b1=None, w2=None, b2=None):
    """The grader's float MLP, on the CPU (quantized kernels are CPU-only); default-initialised without weights."""
    import torch
    from torch import nn
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, N_CLASSES))
    if w1 is not None:
        with torch.no_grad():
            for p, w in zip(model.parameters(), (w1, b1, w2, b2)):
                p.copy_(torch.as_tensor(w).detach().float().cpu())
    return model.eval()


def _grader_quantized(*weights):
    """quantize_dynamic of the grader's MLP: the truth a saved file is compared with, and the skeleton a
    state_dict is loaded into."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(_float_model(*weights), {torch.nn.Linear}, dtype=torch.qint8)


def _serialized(obj) -> np.ndarray:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return np.frombuffer(buf.getvalue(), np.uint8).copy()


def _cpu(x):
    import torch
    return torch.as_tensor(x).cpu()


def torch_float_size(student, w1, b1, w2, b2) -> int:
    """The float model's serialized state_dict, in bytes (the reference worker): what quantization must shrink."""
    return int(_serialized(_float_model(w1, b1, w2, b2).state_dict()).size)


def torch_int8_size(student, w1, b1, w2, b2) -> int:
    """The heaviest correct answer's state_dict, in bytes (the reference worker): every Linear int8 with one scale
    and zero point per output channel (per_channel_dynamic_qconfig), what int8 weights weigh at most."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(
            _float_model(w1, b1, w2, b2), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})
    return int(_serialized(q.state_dict()).size)


def torch_quantized(student, w1, b1, w2, b2, x):
    """The student's quantize_torch on the grader's float model: its logits on x, and its state_dict serialized:
    the artifact a fresh verifier loads (torch_state_logits). Only the artifact's bytes and what the verifier
    computes from them are judged; the logits here must merely agree with them."""
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = student.quantize_torch(_float_model(w1, b1, w2, b2))
        if q is None:
            return "returned None (a missing return statement?)"
        if not isinstance(q, torch.nn.Module):
            return f"returned a {type(q).__name__}, not a model: return the quantized nn.Module itself"
        with torch.no_grad():
            out = q(_cpu(x))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], N_CLASSES):
            return "returned a model whose output is not a (n, 10) tensor of logits"
        return out.float(), _serialized(q.state_dict())


def torch_save(student, w1, b1, w2, b2):
    """The grader quantizes its own model; the student's save_quantized writes it; the file's bytes go back."""
    path = _next_path("torch_saves", ".pt")
    q = _grader_quantized(w1, b1, w2, b2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.save_quantized(q, path)
    return _files.status(path, "torch.save") or _bytes_of(path)


def _linear_weights(state: dict) -> list[str]:
    """What each Linear's weight in a state_dict is, as read from the tensors: "0 qint8 per-tensor",
    "2 float32", ... (packed int8 weights live in `<layer>._packed_params._packed_params`)."""
    import torch
    found = []
    for key, value in state.items():
        if key.endswith("._packed_params._packed_params") and isinstance(value, tuple) and value:
            w, layer = value[0], key.removesuffix("._packed_params._packed_params")
            scheme = "per-channel" if w.is_quantized and w.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else "per-tensor"
            found.append(f"{layer} {str(w.dtype).removeprefix('torch.')} {scheme}")
        elif key.endswith(".weight") and isinstance(value, torch.Tensor):
            found.append(f"{key.removesuffix('.weight')} {str(value.dtype).removeprefix('torch.')}")
    return found


def _load_state(path: str):
    """A state_dict file loaded without running code (weights_only) into the grader's quantized skeleton:
    the model, or a status. A Linear whose weight is still floating point is named ("float LAYER DTYPE; ...")."""
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"noload {_first_line(e)}"
    if not isinstance(obj, dict):
        return f"notdict {type(obj).__name__}"
    layers = _linear_weights(obj)
    if any("float" in layer for layer in layers):
        return "float " + "; ".join(layers)
    skeleton = _grader_quantized()
    try:
        skeleton.load_state_dict(obj)
    except Exception as e:
        return f"nostate {_first_line(e, 200)}"
    return skeleton


def torch_state_logits(student, blob, x):
    """Fresh verifier: the state_dict bytes of quantize_torch's model, loaded into quantize_dynamic's copy of the
    MLP (strictly: every Linear's int8 weights), and its logits on the parent's x."""
    import torch
    loaded = _load_state(_write(blob, ".pt", "torch_loads"))
    if isinstance(loaded, str):
        return loaded
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return loaded(_cpu(x)).float()


def torch_reload(student, blob, w1, b1, w2, b2, x):
    """Fresh verifier: reload the file save_quantized wrote (a TorchScript archive, else a state_dict) and run it;
    run the grader's own quantized model beside it."""
    import torch
    path = _write(blob, ".pt", "torch_loads")
    mine = _grader_quantized(w1, b1, w2, b2)
    x = _cpu(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        how = "torch.jit.load"
        try:
            loaded = torch.jit.load(path, map_location="cpu")
        except Exception:
            how = "torch.load(weights_only=True) + load_state_dict"
            loaded = _load_state(path)
            if isinstance(loaded, str):
                return loaded
        with torch.no_grad():
            got = loaded(x)
            want = mine(x)
    if not isinstance(got, torch.Tensor):
        return f"notensor {type(got).__name__}"
    return got.float(), want, how


# -- TensorFlow Lite ----------------------------------------------------------------------------------------
def _keras_model(w1, b1, w2, b2):
    """The grader's float MLP as Keras: Dense kernels are (in, out), the transpose of Linear.weight."""
    import keras
    model = keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(HIDDEN, activation="relu"),
                              keras.layers.Dense(N_CLASSES)])
    model.layers[0].set_weights([np.asarray(w1).T, np.asarray(b1)])
    model.layers[1].set_weights([np.asarray(w2).T, np.asarray(b2)])
    return model


def to_tflite(student, w1, b1, w2, b2, rep):
    """The student's to_tflite on the grader's Keras model; the flatbuffer comes back as uint8 data."""
    model = _keras_model(w1, b1, w2, b2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb = student.to_tflite(model, np.asarray(rep))
    if fb is None:
        return "to_tflite returned None (a missing return statement?)"
    if isinstance(fb, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(fb), np.uint8).copy()
    return (f"to_tflite returned a {type(fb).__name__}, not the flatbuffer: return the bytes that "
            f"converter.convert() gives")


def export_tflite(student, w1, b1, w2, b2, rep):
    """The student's export_tflite writes a .tflite file; its bytes go back."""
    path = _next_path("tflite_exports", ".tflite")
    model = _keras_model(w1, b1, w2, b2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.export_tflite(model, np.asarray(rep), path)
    return _files.status(path, "tflite") or _bytes_of(path)


def run_tflite(student, blob, x, from_file, allowed_ops):
    """Fresh verifier: a flatbuffer in the TFLite interpreter (builtin ops only, no delegates), its op list held to
    `allowed_ops` (comma-separated, the parent's rule) before it runs, then its logits on x and its ops."""
    import tensorflow as tf
    x = np.asarray(x, np.float32)
    kwargs = {"experimental_op_resolver_type": tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if int(from_file):
        kwargs["model_path"] = _write(blob, ".tflite", "tflite_runs")
    else:
        kwargs["model_content"] = np.asarray(blob, np.uint8).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        try:
            it = tf.lite.Interpreter(**kwargs)
        except Exception as e:
            return f"invalid {_first_line(e)}"
        try:
            ops = sorted({d["op_name"] for d in it._get_ops_details()})
        except Exception:
            ops = []
        extra = [op for op in ops if op not in set(str(allowed_ops).split(","))]
        if extra:
            return f"ops {extra}"
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            return f"arity {len(inputs)} inputs and {len(outputs)} outputs"
        inp, out = inputs[0], outputs[0]
        if list(inp["shape"])[-1:] != [D_IN]:
            return f"shape input of shape {list(inp['shape'])}"
        try:
            it.resize_tensor_input(inp["index"], [len(x), D_IN])
            it.allocate_tensors()
        except Exception as e:
            return f"invalid {_first_line(e)}"
        if inp["dtype"] in (np.int8, np.uint8):  # a full-integer model with integer inputs
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
    if tuple(y.shape) != (len(x), N_CLASSES):
        return f"shape output of shape {list(y.shape)}"
    return y.astype(np.float32), ",".join(ops)
