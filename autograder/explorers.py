"""Explorers for the lessons: small ipywidgets apps that compute real numbers when they are displayed.

Each explorer measures once at display, so a headless run (nbclient, nbconvert) prints real numbers too, and
measures again when a control moves. Nothing goes to stderr: matplotlib's one-time font-cache message is a
logging warning, silenced here.
"""
from __future__ import annotations

import logging
import statistics
import time
import timeit
from collections.abc import Callable

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


class NotShown(AssertionError):
    """A lesson cell's demonstration did not show what its text says it shows."""


def shows(claim: str, holds: bool) -> None:
    """A lesson's demonstrated claim, checked where it is made: prints "✓ claim" when the numbers bear it out, and
    raises when they do not, so a headless run of the lesson (tests/test_lessons.py) fails instead of a cell
    silently showing nothing."""
    if not holds:
        raise NotShown(f"this cell should show that {claim}, and on this run it does not")
    print(f"✓ {claim}")


def shows_raise(claim: str, exc_type: type[BaseException] | tuple, fn: Callable, *args, **kwargs) -> BaseException:
    """A lesson's demonstrated raise: calls fn(*args, **kwargs), prints "✓ claim: ErrorType: first line" when it
    raises exc_type, and returns the exception for the cell to show more of. A call that returns raises NotShown; any
    other exception propagates, so the headless run fails on it either way."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"✓ {claim}: {type(e).__name__}: {first[:160]}")
        return e
    raise NotShown(f"this cell should show that {claim}, and on this run {getattr(fn, '__name__', fn)!s} "
                   "raised nothing")


def time_per_call_us(fn: Callable, *args, budget_s: float = 0.08, repeat: int = 5) -> float:
    """Median time of one call of fn(*args) in microseconds, after a warm-up call (tracing, scripting), with the
    number of calls per run calibrated so that the whole measurement takes about `budget_s`."""
    fn(*args)
    t0 = time.perf_counter()
    fn(*args)
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(budget_s / repeat / one))
    runs = timeit.repeat(lambda: fn(*args), number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def speedup_explorer(modes: dict[str, Callable], make_args: Callable[[int], tuple], sizes: list[int],
                     value: int | None = None, label: str = "rows in x", title: str = "") -> dict:
    """A size slider; per size, the time per call of each mode (e.g. eager and graph), plotted live.

    `modes` maps a name to a function; `make_args(n)` builds its arguments for size n. Every size is measured once
    at display (a table is printed), then the slider re-measures the size it lands on and redraws the plot, the
    current size marked. Returns {size: {mode: µs}}, kept up to date.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = list(modes)
    measured: dict[int, dict[str, float]] = {}

    def measure(n: int) -> None:
        args = make_args(n)
        measured[n] = {name: time_per_call_us(fn, *args) for name, fn in modes.items()}

    def ratio(n: int) -> float:
        return measured[n][names[0]] / measured[n][names[-1]]

    slider = w.SelectionSlider(options=[(f"{n:,}", n) for n in sizes], value=value or sizes[0], description=label,
                               continuous_update=False, style={"description_width": "initial"},
                               layout=w.Layout(width="420px"))
    out = w.Output()

    def draw(_change=None) -> None:
        n = slider.value
        if _change is not None:  # the slider moved: measure that size again, now
            measure(n)
        xs = sorted(measured)
        fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(9, 3.2))
        for name in names:
            ax.plot(xs, [measured[x][name] for x in xs], "o-", label=name)
        ax.axvline(n, color="grey", linestyle=":")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="µs per call", title=title or "time per call")
        ax.legend()
        ax_r.plot(xs, [ratio(x) for x in xs], "o-", color="tab:green")
        ax_r.axhline(1.0, color="grey", linewidth=1)
        ax_r.axvline(n, color="grey", linestyle=":")
        ax_r.set(xscale="log", xlabel=label, ylabel=f"{names[0]} / {names[-1]}", title="speed-up of the graph")
        fig.tight_layout()
        with out:
            out.clear_output(wait=True)
            print(f"{label} = {n:,}: " + ", ".join(f"{k} {measured[n][k]:,.1f} µs" for k in names)
                  + f"; speed-up {ratio(n):.2f}x")
            display(fig)
        plt.close(fig)

    for n in sizes:
        measure(n)
    print(f"{label:>12} " + " ".join(f"{k + ' µs':>14}" for k in names) + "   speed-up")
    for n in sizes:
        print(f"{n:>12,} " + " ".join(f"{measured[n][k]:>14,.1f}" for k in names) + f"   {ratio(n):7.2f}x")
    slider.observe(draw, names="value")
    draw()
    display(w.VBox([slider, out]))
    return measured
