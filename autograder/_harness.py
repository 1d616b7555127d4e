"""The worker: runs one notebook's code in a fresh process and answers the parent's requests.

Started as `python -I -m autograder._harness REQ_FD REPLY_FD [--jail]` (or forked by a zygote), so this module is
imported before any student code. A student's worker enters the jail (autograder._jail) before it reads a request.
It is *not* trusted: the student's code runs in this process and may patch anything here. That is fine by design:
it only computes and reports plain data; the parent draws the inputs, keeps the clock, compares and decides.
"""
from __future__ import annotations

import builtins
import importlib
import linecache
import os
import resource
import sys
import traceback
import types

import numpy as np

from autograder._protocol import Lines, decode, digest, encode, write_all

torch = tf = None
_DEVICE = "cpu"
_NS: dict = {}
_LOADED: dict = {}
_TIMED_OUTPUTS: dict = {}   # a timed request's described outputs, kept until the parent fetches its sample
_CELL_PREFIX = "<clash "
_GRADER: str | None = None   # the exercise's worker-side module (autograder.worker.<name>), imported on first use
GRADER_PREFIX = "@"          # a request's fn "@name" is the grader module's `name`; any other fn is the student's


class _Missing(Exception):
    """The function the parent asked for is not there (distinct from a KeyError the student's code raises)."""


class _Channel:
    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd, self.lines = rfd, wfd, Lines()

    def recv(self) -> dict | None:
        while (line := self.lines.next()) is None:
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                return None
            self.lines.feed(chunk)
        return decode(line)

    def send(self, message: dict) -> None:
        write_all(self.wfd, encode(message))


def _gpu_possible(device: str) -> bool:
    return device == "cuda" or (device == "auto" and os.path.exists("/dev/nvidiactl"))


def _limit_resources(memory_mb: int, cpu_s: float, device: str) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cpu_s > 0:  # a backstop behind the parent's wall clock, should the parent itself be stopped
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s), int(cpu_s) + 5))
    # An address-space cap breaks CUDA initialisation (it reserves huge virtual ranges), so where a GPU may be
    # used the parent's RSS watchdog is the only memory limit. On CPU the frameworks reserve ~3 GB of address space.
    if not _gpu_possible(device):
        cap = (memory_mb + 6144) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _import_frameworks(frameworks: list[str], device: str) -> dict:
    global torch, tf, _DEVICE
    info = {}
    if "torch" in frameworks:
        import torch as _torch
        torch = _torch
        info["torch"] = torch.__version__
        cuda = torch.cuda.is_available()
        if device == "cuda" and not cuda:
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        if cuda and device != "cpu":
            _DEVICE = "cuda"
            info["gpu"] = torch.cuda.get_device_name(0)
    if "tensorflow" in frameworks:
        import tensorflow as _tf
        tf = _tf
        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        if device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        elif gpus:
            # By default TensorFlow reserves all GPU memory at its first op; PyTorch in the same worker needs some.
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
        elif gpus and device != "cpu" and "torch" not in frameworks:
            _DEVICE = "cuda"
        elif device == "cuda" and not gpus and "torch" not in frameworks:
            raise RuntimeError("--device cuda was asked for, but TensorFlow sees no GPU")
        tf.get_logger().setLevel("ERROR")
    info["device"] = _DEVICE
    return info


def _student_frames(exc: BaseException) -> list:
    return [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_CELL_PREFIX)]


def _where(exc: BaseException) -> str:
    """The last place in the student's code that the traceback passes through."""
    frames = _student_frames(exc)
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename[len(_CELL_PREFIX):-1]}, line {f.lineno})"


def _blamed(req: dict, exc: BaseException) -> str | None:
    """The function to name in an error. A grader function (`@name`) that called the student's code names the
    student's function the traceback ends in; one that failed on its own (checking what the student's code
    returned) names the student's function the request says it stands for (`blame`)."""
    fn = req.get("fn") or ""
    if not fn.startswith(GRADER_PREFIX):
        return fn
    frames = _student_frames(exc)
    if frames and frames[-1].name != "<module>":
        return frames[-1].name
    return req.get("blame") or fn[len(GRADER_PREFIX):]


def _describe_error(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # TensorFlow opens with "in user code:" and a trace; its last line is the actual error.
    first = (lines[-1] if lines[0].endswith(":") else lines[0])[:300] if lines else ""
    return f"{type(exc).__name__}{': ' + first if first else ''}{_where(exc)}"


def _run_cells(cells: list[dict], channel: _Channel) -> list[dict]:
    # The cells' namespace is a real __main__ module, as in a kernel, so pickle (torch.save) finds their classes.
    global _NS
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    _NS = main.__dict__
    _NS.update({"__name__": "__main__", "__builtins__": builtins})
    errors = []
    for cell in cells:
        channel.send({"event": "cell", "label": cell["label"]})
        try:
            filename = f"{_CELL_PREFIX}{cell['label']}>"
            # Like IPython: AutoGraph and tracebacks read a function's source through linecache.
            linecache.cache[filename] = (len(cell["source"]), None, cell["source"].splitlines(True), filename)
            code = compile(cell["source"], filename, "exec")
            exec(code, _NS)
        except (Exception, SystemExit) as exc:  # a failing cell must not stop the others: grade what can be graded
            errors.append({"label": cell["label"], "error": _describe_error(exc), "source": cell["source"][:4000]})
    return errors


def _to_framework(value, framework: str):
    if not isinstance(value, np.ndarray):
        return value
    if framework == "torch":
        return torch.as_tensor(value, device=_DEVICE)
    if framework == "tensorflow":
        return tf.constant(value)
    return value


def _plain(arr: np.ndarray, dtype_name: str) -> dict:
    if arr.dtype.kind not in "biufc" or arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
    return {"dtype": dtype_name, "shape": list(arr.shape), "array": arr}


def _describe(obj, depth: int = 0) -> dict:
    """Report what the student returned as plain data: the parent judges types and values."""
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return {"type": "torch.Tensor", "device": str(t.device), **_plain(t.cpu().resolve_conj().numpy(), dtype)}
    if tf is not None and isinstance(obj, (tf.Tensor, tf.Variable)):
        kind = "tf.Variable" if isinstance(obj, tf.Variable) else "tf.Tensor"
        return {"type": kind, "device": obj.device, **_plain(np.asarray(obj.numpy()), obj.dtype.name)}
    if isinstance(obj, (np.ndarray, np.generic)):
        kind = "numpy.ndarray" if isinstance(obj, np.ndarray) else f"numpy.{type(obj).__name__}"
        return {"type": kind, "device": "cpu", **_plain(np.asarray(obj), obj.dtype.name)}
    if isinstance(obj, (bool, int, float)) and type(obj) in (bool, int, float):
        return {"type": type(obj).__name__, "device": "cpu", **_plain(np.asarray(obj), type(obj).__name__)}
    if type(obj) in (list, tuple) and depth < 3:
        return {"type": type(obj).__name__, "items": [_describe(o, depth + 1) for o in obj]}
    if obj is None:
        return {"type": "None"}
    if type(obj) is str:  # e.g. pdb commands, an op's name: the parent judges the text
        return {"type": "str", "value": obj[:20000]}
    return {"type": f"{type(obj).__module__}.{type(obj).__qualname__}"}


def _function(name: str):
    fn = _NS.get(name)
    if fn is None:
        raise _Missing(f"{name} is not defined")
    if not callable(fn):
        raise _Missing(f"{name} is a {type(fn).__name__}, not a function")
    return fn


class Student:
    """What grader code sees of the notebook: its names, read one at a time (`student.train_torch`), never its
    globals. A name the notebook lacks reads as "NAME is not defined", the student's error, not the grader's."""

    __slots__ = ()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in _NS:
            raise _Missing(f"{name} is not defined")
        return _NS[name]


def _callable(fn: str, bind: list | None = None):
    """The function a request names: the student's `fn`, or the grader's `@fn`, called with a Student view first
    and then `bind`'s values (e.g. which of the grader's prepared steps to run)."""
    if not fn.startswith(GRADER_PREFIX):
        return _function(fn)
    name = fn[len(GRADER_PREFIX):]
    if _GRADER is None or name.startswith("_"):
        raise RuntimeError(f"no grader function {name!r} (grader module {_GRADER})")
    target = getattr(importlib.import_module(_GRADER), name)
    student, bound = Student(), list(bind or [])
    return lambda *args: target(student, *bound, *args)


def _is_tensor(obj) -> bool:
    return (torch is not None and isinstance(obj, torch.Tensor)) or (tf is not None and isinstance(obj, tf.Tensor))


def _sync() -> None:
    if torch is not None and _DEVICE == "cuda":
        torch.cuda.synchronize()
    if tf is not None:
        tf.test.experimental.sync_devices()


def _answer(req: dict) -> dict:
    op = req.get("op")
    if op == "call":
        args = [_to_framework(a, req.get("framework", "numpy")) for a in req.get("args", [])]
        reply = {"ok": True, "output": _describe(_callable(req["fn"], req.get("bind"))(*args))}
        if req.get("echo_args"):  # the inputs as they stand now: the parent compares them with what it sent
            reply["args_after"] = [_describe(a) if isinstance(a, np.ndarray) or _is_tensor(a) else {"type": "other"}
                                   for a in args]
        return reply
    if op == "load":
        framework = req.get("framework", "numpy")
        for key, args in req["items"].items():
            _LOADED[key] = [_to_framework(a, framework) for a in args]
        return {"ok": True}
    if op == "run":  # the reference's own functions, on inputs loaded before the parent's clock starts
        fn = _callable(req["fn"], req.get("bind"))
        outputs = [fn(*_LOADED[key]) for key in req["ids"]]
        _sync()
        return {"ok": True, "outputs": [_describe(o) for o in outputs]}
    if op == "timed":  # the parent's clock runs from sending these inputs until this reply: nothing comes earlier
        framework = req.get("framework", "numpy")
        fn = _callable(req["fn"], req.get("bind"))
        items = {key: [_to_framework(a, framework) for a in args] for key, args in req["items"].items()}
        outputs = {key: fn(*args) for key, args in items.items()}
        _sync()
        described = {key: _describe(o) for key, o in outputs.items()}
        if req.get("keep"):
            _TIMED_OUTPUTS.update(described)
        # The nonce ties the reply to this request; the digests commit to every output before the clock stops,
        # while the parent fetches only a sample of them afterwards.
        return {"ok": True, "nonce": req.get("nonce"), "digests": [digest(d) for d in described.values()]}
    if op == "fetch":  # after the clock: the sampled outputs of timed requests
        outputs = [_TIMED_OUTPUTS.get(key, {"type": "None"}) for key in req["ids"]]
        _TIMED_OUTPUTS.clear()
        return {"ok": True, "outputs": outputs}
    return {"ok": False, "error": f"unknown request {op!r}"}


def _scratch_home() -> None:
    """HOME and TMPDIR are the scratch folder (the cwd): caches (keras, torch, inductor) land there and die with it."""
    scratch = os.getcwd()
    os.environ.update(HOME=scratch, TMPDIR=scratch, USER="clash")  # USER: getpass, with a uid no account has
    import tempfile
    tempfile.tempdir = None


def serve(rfd: int, wfd: int, jail=None) -> None:
    """Answer the parent's requests. `jail` (autograder._jail.Jail) is set for a student's worker: it is confined
    before any notebook code runs, and the first thing it tells the parent is what confines it."""
    _scratch_home()
    channel = _Channel(rfd, wfd)
    setup = channel.recv()
    if setup is None:
        return
    device = setup.get("device", "auto")
    global _GRADER
    _GRADER = setup.get("grader")
    try:
        _limit_resources(int(setup.get("memory_mb", 4096)), float(setup.get("cpu_s", 0)), device)
        info = _import_frameworks(setup.get("frameworks", []), device)
    except Exception as exc:
        channel.send({"event": "ready", "ok": False, "error": _describe_error(exc)})
        return
    if jail is not None:
        from autograder import _jail
        _jail.confine(jail, os.getcwd(), _gpu_possible(device))
        channel.send({"event": "jail", "pid": jail.pid, "enforced": jail.enforced, "missing": jail.missing})
    errors = _run_cells(setup.get("cells", []), channel)
    channel.send({"event": "ready", "ok": True, "info": info, "cell_errors": errors,
                  "defined": sorted(k for k, v in _NS.items() if callable(v) and not k.startswith("_"))})
    while (req := channel.recv()) is not None:
        if req.get("op") == "quit":
            return
        try:
            reply = _answer(req)
        except _Missing as exc:
            reply = {"ok": False, "error": str(exc)}
        except NotImplementedError as exc:
            # nbgrader's stub is a bare `raise NotImplementedError()` (which tf.function re-raises as "...
            # NotImplementedError:"); one with a message is a real error, e.g. NumPy meeting a symbolic tensor.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            if lines and lines[-1].removeprefix("NotImplementedError:").strip():
                reply = {"ok": False, "error": f"{_blamed(req, exc)} raised {_describe_error(exc)}"}
            else:
                reply = {"ok": False, "error": f"{_blamed(req, exc)} is not written yet: "
                                               f"it raises NotImplementedError{_where(exc)}"}
        except (Exception, SystemExit) as exc:
            reply = {"ok": False, "error": f"{_blamed(req, exc)} raised {_describe_error(exc)}"}
        channel.send(reply)


def main(argv: list[str]) -> None:
    """`python -I -m autograder._harness REQ_FD REPLY_FD [--jail]`: a fresh worker, as `Worker` starts one."""
    from autograder import _jail
    _jail.die_with_parent()
    jail = _jail.enter(os.getcwd()) if "--jail" in argv else None
    serve(int(argv[0]), int(argv[1]), jail)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: frameworks' atexit hooks can be slow or noisy
