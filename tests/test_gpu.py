"""The PyTorch parts on a CUDA GPU: every torch part of each solution passes there, and a host sync that only
torch.cuda.set_sync_debug_mode can see still fails module 07's no_sync_loop, naming the student's line.

These need a GPU, and no CI machine has one: run them on a GPU machine with `python -m pytest tests/test_gpu.py`
(benchmarks/gpu_torch.sh does, on a machine with PyTorch alone)."""
import pytest

from conftest import notebook_with, parts

torch = pytest.importorskip("torch", reason="the GPU tests check the PyTorch side")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none is visible here)")]

# Parts on CUDA may differ from CPU only where a spec says so; these modules' torch parts all run on the device.
MODULES = ["01_tensors", "02_models", "03_debugging", "05_torchscript", "06_compilers", "07_performance",
           "08_quantization"]

# torch.nonzero copies its result's size to the host: a sync that no patched Tensor method sees.
from test_evidence_m07 import NONZERO_EACH_STEP  # noqa: E402


@pytest.mark.parametrize("module_id", MODULES)
def test_every_torch_part_of_the_solution_passes_on_cuda(course, module_id):
    from autograder import run_check
    module = next(m for m in course.modules if m.id == module_id)
    result = run_check(module_id, notebook=module.solution, course=course, framework="torch", device="cuda")
    assert result.device.startswith("cuda"), result.summary()
    torch_parts = [p for p in result.parts if p.status != "skipped"]
    assert torch_parts and all(p.passed for p in torch_parts), result.summary()


def test_a_sync_only_the_debug_mode_sees_fails_and_names_the_line(course, tmp_path):
    from autograder import run_check
    module = next(m for m in course.modules if m.id == "07_performance")
    nb = notebook_with(module.solution, {"train_steps": NONZERO_EACH_STEP}, tmp_path / "nonzero.ipynb")
    got = parts(run_check("07_performance.no_sync_loop", notebook=nb, course=course, framework="torch",
                          device="cuda"))["no_sync_loop"]
    assert not got.passed
    assert "its graph calls aten.nonzero x" in got.message, got.message
