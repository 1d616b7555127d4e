"""The parent's clock: timing a student's function against the course's baseline, with no forward channel.

A student's worker runs untrusted code that may patch the harness, so every timed request is built to give it
nothing to get ahead with:

- its inputs travel *in* the request, sent when the clock starts: nothing can be computed before the clock runs;
- the request carries a fresh nonce that the reply must echo: a reply written early, or kept from an earlier
  request, is refused;
- the reply carries a digest of every output, computed inside the window, and the outputs stay in the worker; after
  the clock has stopped the parent fetches a random sample, checks it against the digests (work done after the
  reply cannot match them) and against the baseline's outputs on the same inputs (work skipped cannot either).

The baseline runs in the clean reference worker under the same protocol, so both sides pay the same transfer. The
course's own functions timed alone (`time_reference`, for comparing with a student's benchmark) load their inputs
first: that worker runs no student code.
"""
from __future__ import annotations

import secrets
import statistics
import time

from autograder._compare import Mismatch
from autograder._protocol import digest, encode
from autograder._sandbox import Worker, exclusive_timing, same_cpu

VERIFIED = 16   # timed outputs of the fast side fetched and checked after the clock, drawn at random


def _fn(spec) -> tuple[str, list | None]:
    """A timed function: "name" (the student's), "@name" (the grader's) or ("@name", [bound args])."""
    return (spec, None) if isinstance(spec, str) else (spec[0], list(spec[1]))


def speedup(ctx, baseline, fast, make_args, framework: str, rounds: int, warmup: int, target_round_s: float) -> float:
    """See Context.speedup."""
    on_cpu = ctx.device == "cpu"
    student, reference = ctx.student, ctx.reference
    with exclusive_timing(student, reference), same_cpu(student, reference):
        # Calibrate the batch size so one request takes about target_round_s.
        cal = _inputs("cal.", 4, make_args)
        _timed(ctx, reference, baseline, cal, framework)
        t, _, _ = _timed(ctx, reference, baseline, cal, framework)
        per_round = int(min(50, max(1, target_round_s / max(t / 4, 1e-6))))
        times, cpu = {"a": [], "b": []}, {"a": [], "b": []}
        fast_inputs, committed = {}, {}
        for r in range(warmup + rounds):
            sides = [("a", reference, baseline), ("b", student, fast)]
            for side, worker, fn in sides if r % 2 == 0 else sides[::-1]:
                inputs = _inputs(f"{side}{r}.", per_round, make_args)
                elapsed, cpu_s, digests = _timed(ctx, worker, fn, inputs, framework, cpu=on_cpu, keep=side == "b")
                times[side].append(elapsed)
                cpu[side].append(cpu_s)
                if side == "b":
                    fast_inputs.update(inputs)
                    committed.update(zip(inputs, digests))
    a = statistics.median(times["a"][warmup:]) / per_round
    b = statistics.median(times["b"][warmup:]) / per_round
    ratio = a / b
    ctx.details.update(baseline_us=a * 1e6, fast_us=b * 1e6, wall_ratio=ratio, threshold=ctx.threshold(),
                       rounds=rounds, per_round=per_round)
    if on_cpu and None not in cpu["a"] + cpu["b"]:
        cpu_a, cpu_b = (statistics.median(cpu[side][warmup:]) for side in "ab")
        if cpu_a > 0 and cpu_b > 0:
            ctx.details.update(cpu_ratio=cpu_a / cpu_b)
            ratio = min(ratio, cpu_a / cpu_b)
    ctx.details.update(ratio=ratio)
    _verify(ctx, baseline, fast, fast_inputs, committed, framework)
    return ratio


def time_reference(ctx, timed: dict, rounds: int, warmup: int, target_round_s: float) -> dict:
    """See Context.time_reference."""
    reference, labels, n = ctx.reference, list(timed), warmup + rounds
    with exclusive_timing(ctx.student, reference):
        per_round, ids = {}, {}
        for i, label in enumerate(labels):
            fn, make_args, framework = timed[label]
            cal = _load(reference, f"cal{i}.", 1, 2, make_args, framework)
            _run_loaded(ctx, fn, cal)
            t = _run_loaded(ctx, fn, cal)
            per_round[label] = int(min(50, max(1, target_round_s / max(t / 2, 1e-6))))
            _load(reference, f"t{i}.", n, per_round[label], make_args, framework)
            ids[label] = [[f"t{i}.{r}.{k}" for k in range(per_round[label])] for r in range(n)]
        times = {label: [] for label in labels}
        for r in range(n):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                times[label].append(_run_loaded(ctx, timed[label][0], ids[label][r]) / per_round[label])
    return {label: statistics.median(times[label][warmup:]) for label in labels}


def _inputs(prefix: str, count: int, make_args) -> dict:
    return {f"{prefix}{k}": make_args() for k in range(count)}


def _clocked(ctx, worker: Worker, data: bytes, message: dict, doing: str, cpu: bool,
             timeout: float | None = None) -> tuple[float, float | None, dict]:
    """One request on this process's clock, from the first byte sent to the reply: its wall time and, when `cpu`, the
    worker's CPU time (None without /proc). The other worker is frozen meanwhile: a student's thread that burns CPU
    while the baseline runs (to slow it down) cannot run at all."""
    idle = ctx.student if worker is ctx.reference else ctx.reference
    worker.wait_ready()
    idle.pause()
    try:
        c0 = worker.cpu_seconds() if cpu else None
        t0 = time.perf_counter()
        reply = worker.request(message, doing, timeout, data=data)
        elapsed = time.perf_counter() - t0
        c1 = worker.cpu_seconds() if cpu else None
    finally:
        idle.resume()
    return elapsed, (c1 - c0 if c0 is not None and c1 is not None else None), reply


def _timed(ctx, worker: Worker, spec, inputs: dict, framework: str, cpu: bool = False,
           keep: bool = False) -> tuple[float, float | None, list[str]]:
    """One timed request carrying its inputs: (wall s, CPU s or None, the outputs' digests). `keep`: the worker holds
    the outputs for a later fetch."""
    fn, bind = _fn(spec)
    timeout = ctx._student_call(fn.removeprefix("@")) if worker is ctx.student else worker.limits.compile_timeout_s
    nonce = secrets.token_hex(16)
    message = {"op": "timed", "fn": fn, "bind": bind, "framework": framework, "nonce": nonce, "items": inputs,
               "keep": keep}
    data = encode(message)   # encoded before the clock starts: the parent's own work is not the worker's time
    elapsed, cpu_s, reply = _clocked(ctx, worker, data, message, f"while timing {fn}", cpu, timeout)
    reply = ctx._reference_reply(reply) if worker is ctx.reference else ctx._student_reply(reply, fn)
    if reply.get("nonce") != nonce:
        raise Mismatch(f"{fn} was timed, and the reply that came back was not for that request (a stale or "
                       f"pre-written reply): the time cannot be trusted")
    digests = reply.get("digests")
    if not isinstance(digests, list) or len(digests) != len(inputs) or not all(isinstance(d, str) for d in digests):
        raise Mismatch(f"{fn} was timed, and its reply did not account for each of its {len(inputs)} outputs")
    return elapsed, cpu_s, digests


def _load(worker: Worker, prefix: str, n_rounds: int, per_round: int, make_args, framework: str) -> list[str]:
    items = {f"{prefix}{r}.{k}": make_args() for r in range(n_rounds) for k in range(per_round)}
    worker.request({"op": "load", "items": items, "framework": framework}, "while loading inputs")
    return list(items)


def _run_loaded(ctx, spec, ids: list[str]) -> float:
    """The course's own function on inputs the reference worker already holds: seconds for the request."""
    fn, bind = _fn(spec)
    message = {"op": "run", "fn": fn, "ids": ids, "bind": bind}
    elapsed, _, reply = _clocked(ctx, ctx.reference, encode(message), message, f"while timing {fn}", False)
    ctx._reference_reply(reply)
    return elapsed


def _verify(ctx, baseline, fast, inputs: dict, committed: dict, framework: str) -> None:
    """After the clock: a random sample of the fast side's timed outputs must be what it committed to while timed
    (or the work was done later), and right (or skipping the work would pay)."""
    fn, _ = _fn(fast)
    keys = list(inputs)
    picks = sorted(int(i) for i in ctx.rng.choice(len(keys), size=min(VERIFIED, len(keys)), replace=False))
    sample = [keys[i] for i in picks]
    reply = ctx._student_reply(ctx.student.request({"op": "fetch", "ids": sample}, f"while fetching {fn}'s outputs"),
                               fn)
    outputs = reply.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != len(sample):
        raise Mismatch(f"{fn}'s timed outputs could not be fetched after the clock stopped")
    for key, output in zip(sample, outputs):
        if not isinstance(output, dict) or digest(output) != committed[key]:
            raise Mismatch(f"{fn}'s outputs fetched after the clock stopped are not those it committed to while "
                           f"timed: the work was not done inside the timed window")
    base, bind = _fn(baseline)
    for key, output in zip(sample, outputs):
        # The course's baseline, which the reference worker runs with or without the solutions.
        message, _ = ctx._message(base, inputs[key], framework, None, bind)
        want = ctx._reference_reply(ctx.reference.request(message, f"in {base}"))["output"]
        n = len(want["items"]) if "items" in want else 1
        ctx.same(output, want, framework, [f"output {i}" for i in range(n)], f"{fn} (while timed)")
