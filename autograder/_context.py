"""What a part's check sees: the two workers, the run's random generator, the device, and judging helpers.

A part check is a function `check(ctx)` in `autograder/exercises/m<ID>.py`. It draws inputs from
`ctx.rng`, calls functions in the student's and the reference's workers, and raises `Mismatch` with one
teaching sentence when the answer is wrong. Every comparison happens here, in the trusted parent.
"""
from __future__ import annotations

import numpy as np

from autograder import _timing
from autograder._compare import Mismatch, _index, _num, compare, leaves, tensor
from autograder._registry import Part
from autograder._sandbox import Worker, WorkerError


class NeedsReference(Exception):
    """The part compares against the reference solution, and this copy of the course has none."""


class GraderError(RuntimeError):
    """The course's own code failed (a broken reference solution or spec): not the student's fault."""


class Context:
    def __init__(self, part: Part, rng: np.random.Generator, device: str, student: Worker,
                 reference: Worker, has_reference: bool, cell_errors: list[dict], fatal: dict | None = None):
        self.part, self.rng, self.device = part, rng, device
        self.student, self.reference, self.has_reference = student, reference, has_reference
        self.cell_errors = cell_errors
        self.details: dict = {}
        # Student functions that ended a worker in an earlier part (a timeout, a crash), with what happened: a part
        # that calls one again fails at once with that cause, and the other parts run in a fresh worker.
        self.fatal = fatal if fatal is not None else {}
        self.calling: str | None = None   # the student function of the request in flight

    def _student_call(self, name: str) -> float:
        """Before a request that runs the student's `name`: refuse one that already ended a worker. Returns its time
        limit: a part that may compile (`compiles = true`) gives each function's first call in a worker the
        compile allowance, later calls the per-call limit."""
        if name in self.fatal:
            raise Mismatch(f"not run again: {self.fatal[name]}")
        self.calling = name
        limits, first = self.student.limits, name not in self.student.called
        self.student.called.add(name)
        return limits.compile_timeout_s if self.part.compiles and first else limits.call_timeout_s

    # -- calling -------------------------------------------------------------------------------------
    def _student_reply(self, reply: dict, fn: str) -> dict:
        if reply.get("ok"):
            return reply
        error = str(reply.get("error", "failed"))
        # The name the notebook lacks: a grader function may read several of the student's names.
        fn = error.removesuffix(" is not defined") if error.endswith(" is not defined") else fn.removeprefix("@")
        if error.endswith("is not defined") and self.cell_errors:
            # Blame the failed cell that mentions the name, else the first failed cell.
            blamed = next((e for e in self.cell_errors if fn in e.get("source", "")), self.cell_errors[0])
            error += f": {blamed['label']} failed with {blamed['error']}"
        elif error.endswith("is not defined"):
            error += f" (define a function named {fn} in the notebook)"
        raise Mismatch(error)

    @staticmethod
    def _unmutated(reply: dict, args: list, name: str) -> dict:
        """The worker sends back each input as it stands after the call; this process compares it with what it sent.
        An in-place update of a caller's tensor (w -= lr * grad on the w0 it was given) is a bug the student's
        own results cannot show."""
        after = reply.get("args_after")
        if after is None:
            return reply
        for i, (sent, leaf) in enumerate(zip(args, after)):
            if not isinstance(sent, np.ndarray) or "array" not in leaf:
                continue
            now = np.asarray(leaf["array"])
            if now.shape != sent.shape or not np.array_equal(now.astype(np.float64), sent.astype(np.float64),
                                                             equal_nan=True):
                changed = int(np.sum(now != sent)) if now.shape == sent.shape else sent.size
                raise Mismatch(f"{name} changed its argument {i + 1} ({_array_words(sent)}) in place: {changed} of "
                               f"{sent.size} values differ after the call. The caller still needs its input; work on a "
                               f"copy (w = w0.clone() in PyTorch, tf.Variable(w0) in TensorFlow)", "mutated")
        return reply

    @staticmethod
    def _reference_reply(reply: dict) -> dict:
        if not reply.get("ok"):
            raise GraderError(f"the reference solution failed: {reply.get('error')}")
        return reply

    @staticmethod
    def _message(fn: str, args: list, framework: str, blame: str | None, bind: list | None) -> tuple[dict, str]:
        """A call request, and the student's function it stands for: `fn` itself, or for a grader function
        ("@name", autograder.worker.<exercise>.name, given a view of the notebook first) the `blame` name."""
        message = {"op": "call", "fn": fn, "args": args, "framework": framework}
        if bind:
            message["bind"] = bind
        if blame:
            message["blame"] = blame
        return message, blame or fn

    def call(self, fn: str, args: list, framework: str, blame: str | None = None, bind: list | None = None) -> dict:
        """Call the student's `fn` (or the grader's "@fn", which calls the student's `blame`) on tensors made from
        `args`; return its described output."""
        message, name = self._message(fn, args, framework, blame, bind)
        timeout = self._student_call(name)
        reply = self.student.request(_echoing(message), f"in {name}", timeout)
        return self._unmutated(self._student_reply(reply, name), args, name)["output"]

    def call_both(self, fn: str, args: list, framework: str, blame: str | None = None,
                  bind: list | None = None) -> tuple[dict, dict]:
        """The student's and the reference's `fn` on the same inputs, computed concurrently."""
        if not self.has_reference:
            raise NeedsReference
        message, name = self._message(fn, args, framework, blame, bind)
        timeout = self._student_call(name)
        self.student.send(_echoing(message))
        self.reference.send(message)
        try:
            mine = self.student.receive(timeout, f"in {name}")
        except WorkerError:
            # Take the reference's answer all the same: left in its queue, it would answer the next part's request.
            self.reference.receive(self.reference.limits.compile_timeout_s, f"in the reference {name}")
            raise
        ref = self.reference.receive(self.reference.limits.compile_timeout_s, f"in the reference {name}")
        mine = self._unmutated(self._student_reply(mine, name), args, name)
        return mine["output"], self._reference_reply(ref)["output"]

    def call_reference(self, fn: str, args: list, framework: str, bind: list | None = None) -> dict:
        """Call `fn` in the clean reference worker only (e.g. the grader's own model, for ground truth). Without the
        solutions (a student's copy of the course) the worker runs no notebook: a grader function ("@fn") that
        needs only the grader's own code still answers; one that reads the solution's names needs the reference."""
        if not self.has_reference and not fn.startswith("@"):
            raise NeedsReference
        message, name = self._message(fn, args, framework, None, bind)
        reply = self.reference.request(message, f"in {name}")
        if not self.has_reference and not reply.get("ok") and str(reply.get("error", "")).endswith("is not defined"):
            raise NeedsReference
        return self._reference_reply(reply)["output"]

    def fresh_worker(self, frameworks: list[str], device: str | None = None) -> Worker:
        """A new isolated worker that runs no notebook code, only the exercise's grader functions: where a student's
        artefact (an exported program, a TorchScript archive) is loaded and run. Never the reference worker, which
        is unconfined and can read the solutions. It starts at once; close it, or use it in a `with` block."""
        zygote = getattr(self.student.proc, "zygote", None)  # forked workers: fork this one from the same zygote
        return Worker("student", [], frameworks, device or self.device, self.student.limits, zygote,
                      self.student.grader)

    def fresh_call(self, worker: Worker, fn: str, args: list, framework: str, doing: str,
                   bind: list | None = None) -> dict:
        """Call the grader's `fn` in a fresh worker; its failure is the artefact's, told as `doing: error`."""
        message, _ = self._message(fn, args, framework, None, bind)
        reply = worker.request(message, doing)
        if not reply.get("ok"):
            raise Mismatch(f"{doing}: {reply.get('error')}")
        return reply["output"]

    # -- judging -------------------------------------------------------------------------------------
    @staticmethod
    def text(output: dict, what: str) -> str:
        """A described output that must be a str (pdb commands, an op's name)."""
        if output.get("type") != "str":
            raise Mismatch(f"{what} is a {output.get('type')}, expected a str")
        return output["value"]

    @staticmethod
    def truth(*arrays: np.ndarray, dtype: str = "float32") -> dict:
        """Ground truth computed here (e.g. in float64), in the shape of a described output.
        `dtype` is what the student's tensors must have; the values keep their full precision."""
        items = [{"type": "truth", "dtype": dtype, "array": np.asarray(a)} for a in arrays]
        return items[0] if len(items) == 1 else {"type": "tuple", "items": items}

    @staticmethod
    def fail(message: str, diagnosis: str | None = None):
        """Fail the part; `diagnosis` (a key of autograder._compare.DIAGNOSES) picks the part's hint for it."""
        raise Mismatch(message, diagnosis)

    def threshold(self) -> float:
        return self.part.threshold(self.device)

    def same(self, got: dict, want: dict, framework: str, names: list[str], what: str,
             want_framework: str | None = None) -> None:
        """`got` (a student's output) must hold len(names) tensors of `framework` matching `want`."""
        got_leaves = leaves(got, len(names), what)
        want_leaves = leaves(want, len(names), "the reference")
        for name, g, w in zip(names, got_leaves, want_leaves):
            label = f"{what} [{name}]" if len(names) > 1 else what
            arr = tensor(g, framework, self.device, label)
            want_arr = tensor(w, want_framework or framework, self.device, "the reference") \
                if (want_framework or framework) != "any" else w["array"]
            try:
                stats = compare(arr, want_arr, label, rtol=self.part.rtol, atol=self.part.atol,
                                actual_dtype=_np_dtype(g), expected_dtype=_np_dtype(w))
            except Mismatch as m:
                self.details.update(m.details)
                raise
            worst = self.details.get("max_abs_err", -1.0)
            if stats["max_abs_err"] >= worst:
                self.details.update(stats)

    def agree(self, mine_torch: dict, mine_tf: dict, truth: dict, names: list[str], sides: tuple[str, str]) -> None:
        """The PyTorch and TensorFlow answers must match float64 truth (and so each other). A failure names both
        sides and the truth at the first place either is off, so the student sees which framework is wrong, and
        the hint follows the wrong side's diagnosis."""
        torch_name, tf_name = sides
        answers = ((torch_name, "torch", leaves(mine_torch, len(names), torch_name)),
                   (tf_name, "tensorflow", leaves(mine_tf, len(names), tf_name)))
        want = leaves(truth, len(names), "the truth")
        for k, name in enumerate(names):
            label = f" [{name}]" if len(names) > 1 else ""
            arrays, wrong = {}, {}
            for side, framework, got in answers:
                arr = tensor(got[k], framework, self.device, side + label)
                arrays[side] = arr
                try:
                    stats = compare(arr, want[k]["array"], f"{side}{label} vs float64 NumPy", rtol=self.part.rtol,
                                    atol=self.part.atol, actual_dtype=_np_dtype(got[k]),
                                    expected_dtype=_np_dtype(want[k]))
                    if stats["max_abs_err"] >= self.details.get("max_abs_err", -1.0):
                        self.details.update(stats)
                except Mismatch as m:
                    wrong[side] = m
            if not wrong:
                continue
            first = next(iter(wrong.values()))
            self.details.update(first.details)
            if any(m.at is None for m in wrong.values()):   # a shape or dtype: that sentence already names the side
                raise next(m for m in wrong.values() if m.at is None)
            e = np.asarray(want[k]["array"], np.float64)
            # Where either side is first off: compare() found each side's first index, in C order.
            i = min((m.at for m in wrong.values()), key=lambda idx: np.ravel_multi_index(idx, e.shape))
            at = f" at index {_index(i)}" if e.ndim else ""
            verb = "is" if len(wrong) == 1 else "are"
            why = "; ".join(f"{side}: max abs err {m.details.get('max_abs_err', float('nan')):.3g}" +
                            (f", {m.because}" if m.because else "") for side, m in wrong.items())
            raise Mismatch(f"{' and '.join(wrong)} {verb} off{label}{at}: {torch_name} gave "
                           f"{_num(arrays[torch_name][i])}, {tf_name} gave {_num(arrays[tf_name][i])}, float64 NumPy "
                           f"gives {_num(e[i])} ({why})", first.diagnosis, **first.details)

    # -- timing --------------------------------------------------------------------------------------
    def speedup(self, baseline: str, fast: str, make_args, framework: str, rounds: int = 15,
                warmup: int = 3, target_round_s: float = 0.02) -> float:
        """Median time of the course's `baseline` (in the clean reference worker) over the student's `fast`.

        The two are timed on the parent's clock, interleaved and alternating which goes first, after a warm-up,
        each request running a batch of distinct inputs and synchronising the device before it answers.
        Distinct inputs make memoisation useless; the baseline's process is not the student's and is frozen
        while the student's runs (and the other way round), so neither can slow the other; no other worker
        of this process runs meanwhile; and the fast side's outputs are verified afterwards.

        On a CPU the ratio is the smaller of the wall-clock ratio and the ratio of the workers' CPU times (read
        from /proc, where there is one). Other programs on a busy machine stretch either side's wall time by
        chance (an eager wrapper measured 0.65-2.11x against eager with two busy loops on two cores), not the CPU
        time its work takes; and work handed to another process, which the CPU time of the worker would miss,
        still shows in the wall time.
        """
        return _timing.speedup(self, baseline, fast, make_args, framework, rounds, warmup, target_round_s)

    def speed_verdict(self, ratio: float, fast: str, baseline: str = "eager") -> str:
        """Fail when `ratio` (from speedup) is under the part's threshold; else the one-line success message."""
        threshold = self.threshold()
        per_call = f"{self.details['fast_us']:.0f} µs vs {self.details['baseline_us']:.0f} µs per call"
        if ratio < threshold:
            self.fail(f"{fast} is {ratio:.2f}x as fast as {baseline}; at least {threshold:g}x expected ({per_call})")
        return f"{ratio:.1f}x faster than eager (threshold {threshold:g}x): {per_call}"

    def time_reference(self, timed: dict, rounds: int = 9, warmup: int = 2, target_round_s: float = 0.02) -> dict:
        """Median seconds per call of several of the course's own functions, all in the clean reference worker.

        `timed` maps a label to (function name, make_args, framework). Like speedup: the parent's clock, a batch of
        distinct inputs per request sized to about target_round_s, the device synchronised before each answer,
        a warm-up, and the functions interleaved (their order rotates every round); the student's worker and
        every other worker of this process are frozen meanwhile. For checks that compare a student's own
        measurements (e.g. a benchmark's ratios) with the grader's.
        """
        if not self.has_reference:
            raise NeedsReference
        return _timing.time_reference(self, timed, rounds, warmup, target_round_s)


def _echoing(message: dict) -> dict:
    """A student's call request that asks for its array inputs back as they stand after the call (_unmutated)."""
    return {**message, "echo_args": True} if any(isinstance(a, np.ndarray) for a in message["args"]) else message


def _array_words(arr: np.ndarray) -> str:
    return f"a {arr.dtype.name} array of shape {tuple(arr.shape)}"


def _np_dtype(leaf: dict) -> str:
    return leaf.get("dtype") or leaf["array"].dtype.name
