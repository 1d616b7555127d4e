"""The capstone's showdown (autograder.showdown): its rules on made-up samples, and one small real run."""
import dataclasses
import json
import re
import time

import pytest

from autograder import showdown
from autograder.showdown import SAMPLES, Measured, Report, run_showdown
from autograder.showdown_worker import flops_per_step

from conftest import ROOT


def measured(mode, batch, width, centre_ms, spread_ms=0.1):
    """SAMPLES per-step times spread evenly around centre_ms: median centre_ms, IQR about ±spread_ms/2."""
    step = spread_ms / (SAMPLES - 1)
    times = [(centre_ms - spread_ms / 2 + i * step) / 1e3 for i in range(SAMPLES)]
    return Measured(mode, batch, width, times, first_s=1.0, naive_s=0.1, peak_mb=10.0)


def test_a_difference_inside_the_noise_is_a_tie_and_one_outside_is_a_win_named_with_its_ratio():
    report = Report({"torch": "CPU", "tensorflow": "CPU"}, 1, SAMPLES, [
        measured("torch_eager", 32, 8, 2.0, spread_ms=1.0), measured("tf_eager", 32, 8, 2.3, spread_ms=1.0),
        measured("torch_compile", 32, 8, 2.0), measured("tf_xla", 32, 8, 3.0)])
    eager = report.verdict("eager", "torch_eager", "tf_eager", 32, 8)
    assert "tie" in eager and "IQRs overlap" in eager
    compiled = report.verdict("compiled", "torch_compile", "tf_xla", 32, 8)
    assert compiled.startswith("compiled: PyTorch (torch_compile) 1.50× faster"), compiled
    swapped = Report({}, 1, SAMPLES, [measured("torch_compile", 32, 8, 3.0), measured("tf_xla", 32, 8, 2.0)])
    assert "TensorFlow (tf_xla) 1.50× faster" in swapped.verdict("compiled", "torch_compile", "tf_xla", 32, 8)
    assert report.verdict("absent", "torch_eager", "keras_tf_eager", 32, 8) is None


def test_the_regime_is_measured_from_fixed_cost_against_work():
    """Fastest step = 2 ms fixed + FLOPs at 10 GFLOP/s: the small configuration is mostly fixed cost (launch-bound),
    the large one mostly work (compute-bound); the fit recovers the 2 ms."""
    def made(batch, width):
        return 2.0 + flops_per_step(batch, width) / 10e9 * 1e3

    rows = [measured("torch_eager", b, w, made(b, w), spread_ms=0.01) for b, w in ((16, 4), (32, 8), (256, 64))]
    report = Report({"torch": "CPU"}, 1, SAMPLES, rows)
    assert [report.regime(b, w) for b, w in report.configs()] == ["launch-bound", "launch-bound", "compute-bound"]
    assert report.overhead_share(16, 4) == pytest.approx(2.0 / made(16, 4), rel=0.02)
    assert report.throughput(256, 64) == pytest.approx(flops_per_step(256, 64) / made(256, 64) * 1e3 / 1e9, rel=0.01)
    alone = Report({"torch": "CPU"}, 1, SAMPLES, rows[:1])
    assert alone.regime(16, 4) == "one configuration: no regime"


def test_the_report_names_the_device_and_the_sample_count_in_its_table_and_verdicts():
    report = Report({"torch": "CPU", "tensorflow": "CPU"}, 1, SAMPLES,
                    [measured("torch_eager", 32, 8, 2.0), measured("tf_eager", 32, 8, 20.0)])
    assert report.table().startswith(f"device: CPU, 1 thread per runtime; {SAMPLES} interleaved samples per mode")
    assert "on CPU, 1 thread per runtime" in report.verdicts()
    gpu = Report({"torch": "NVIDIA H200", "tensorflow": "NVIDIA H200"}, 1, SAMPLES, report.rows)
    assert gpu.device == "NVIDIA H200"
    assert json.loads(json.dumps(report.to_json()))["rows"][0]["mode"] == "torch_eager"


def test_bad_requests_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown modes \\['torch_jit'\\]"):
        run_showdown([(8, 4)], modes=("torch_jit",))
    with pytest.raises(ValueError, match="at least 4 samples"):
        run_showdown([(8, 4)], modes=("torch_eager",), samples=3)


def test_a_runtime_that_is_not_installed_is_skipped_and_said(monkeypatch):
    """A GPU image without TensorFlow still measures the PyTorch side and says what it left out."""
    real = showdown.importlib.util.find_spec
    monkeypatch.setattr(showdown.importlib.util, "find_spec", lambda n: None if n == "tensorflow" else real(n))
    report = run_showdown([(8, 4)], modes=("tf_eager", "tf_xla"), samples=4)
    assert report.rows == [] and report.skipped == {"tf_eager": "tensorflow not installed",
                                                    "tf_xla": "tensorflow not installed"}
    assert "not measured: tf_eager (tensorflow not installed)" in report.table()


def test_the_lessons_quote_the_showdowns_own_sample_count():
    for framework in ("pytorch", "tensorflow"):
        nb = json.loads((ROOT / "lessons" / "09_capstone" / f"09_capstone_{framework}.ipynb").read_text())
        text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        quoted = {int(n) for n in re.findall(r"(\d+) interleaved samples", text)}
        assert quoted == {SAMPLES}, (framework, quoted)


@pytest.mark.slow
def test_a_showdown_is_reused_only_for_the_same_request_within_its_window(tmp_path, monkeypatch):
    """The 09 twins ask for the same showdown: the second reads the first's back, and nothing else does."""
    monkeypatch.setenv("CLASH_SHOWDOWN_CACHE", str(tmp_path))
    report = Report({"torch": "CPU"}, 1, 4, rows=[measured("torch_eager", 8, 4, 2.0)], measured_at=time.time())
    request = {"configs": [[8, 4]], "modes": ["torch_eager"], "samples": 4, "seed": 0, "isolate": False}
    showdown._keep(showdown._cache_file(request), report)

    def no_worker(group):
        raise AssertionError("a reused showdown started a worker")
    monkeypatch.setattr(showdown, "_Worker", no_worker)
    back = run_showdown([(8, 4)], modes=("torch_eager",), samples=4, reuse_within_s=60)
    assert back.reused and back.rows == report.rows and back.table() == report.table()
    assert "reused: measured at" in back.provenance and "measured now" in report.provenance
    with pytest.raises(AssertionError, match="started a worker"):  # another request measures
        run_showdown([(8, 4)], modes=("torch_eager",), samples=5, reuse_within_s=60)
    with pytest.raises(AssertionError, match="started a worker"):  # so does the same one without reuse
        run_showdown([(8, 4)], modes=("torch_eager",), samples=4)
    stale = dataclasses.replace(report, measured_at=time.time() - 120)
    showdown._keep(showdown._cache_file(request), stale)
    with pytest.raises(AssertionError, match="started a worker"):  # and one measured too long ago is measured again
        run_showdown([(8, 4)], modes=("torch_eager",), samples=4, reuse_within_s=60)
    showdown._cache_file(request).write_text("{half a file")
    with pytest.raises(AssertionError, match="started a worker"):
        run_showdown([(8, 4)], modes=("torch_eager",), samples=4, reuse_within_s=60)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("CLASH_SHOWDOWN_CACHE", str(tmp_path / "not-a-folder"))
    showdown._keep(showdown._cache_file(request), report)  # a cache that cannot be written is skipped, silently


def test_a_small_real_showdown_measures_every_runtime_in_its_own_process():
    """One tiny configuration, three runtimes (PyTorch, TensorFlow, Keras on PyTorch): every mode measured, each
    first call reported apart from its samples, and a worker's failure named with its mode and configuration."""
    modes = ("torch_eager", "tf_function", "keras_torch_eager")
    report = run_showdown([(8, 4)], modes=modes, samples=4)
    assert [r.mode for r in report.rows] == list(modes)
    assert set(report.devices) == {"torch", "tensorflow", "keras_torch"}
    for r in report.rows:
        assert len(r.per_step_s) == 4 and all(t > 0 for t in r.per_step_s), r
        assert r.first_s > 0 and r.naive_s > 0 and r.peak_mb >= 0
    graph = report.row("tf_function", 8, 4)
    assert graph.first_s > graph.median  # its first call traced the step into a graph
    with pytest.raises(RuntimeError, match="torch_eager at batch 8, width 0: "):
        run_showdown([(8, 0)], modes=("torch_eager",), samples=4)
