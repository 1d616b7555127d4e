import numpy as np
import pytest

from autograder._compare import Mismatch, compare, leaves, tensor


def f32(*v):
    return np.array(v, dtype=np.float32)


def test_close_values_pass_and_report_their_error():
    stats = compare(f32(1.0, 2.0), f32(1.0, 2.0001), "x", rtol=1e-4, atol=1e-5)
    assert 0 < stats["max_abs_err"] < 2e-4


def test_a_mismatch_names_shape_dtype_errors_and_first_index():
    with pytest.raises(Mismatch) as e:
        compare(f32(1, 2, 3, 4).reshape(2, 2), f32(1, 2, 3.5, 4).reshape(2, 2), "grad", rtol=1e-4, atol=1e-5)
    msg = str(e.value)
    assert "shape (2, 2)" in msg and "float32" in msg and "max abs err 0.5" in msg
    assert "max rel err 0.143" in msg and "first at index (1, 0)" in msg and "got 3, expected 3.5" in msg


def test_shape_and_dtype_mismatches_have_their_own_messages():
    with pytest.raises(Mismatch, match=r"shape \(3,\), expected \(\)"):
        compare(f32(1, 2, 3), np.float32(1) * np.ones(()), "loss", rtol=1e-4, atol=1e-5)
    with pytest.raises(Mismatch, match="dtype float64, expected float32 .NumPy's float64"):
        compare(np.ones(2), f32(1, 1), "w", rtol=1e-4, atol=1e-5)


def test_nan_must_match_exactly_where_expected():
    compare(f32(np.nan, 1), f32(np.nan, 1), "x", rtol=1e-4, atol=1e-5)
    with pytest.raises(Mismatch, match=r"got nan at index \(0,\), expected 1 \(1 unexpected NaN"):
        compare(f32(np.nan, 1), f32(1, 1), "x", rtol=1e-4, atol=1e-5)
    with pytest.raises(Mismatch, match="1 missing NaN"):
        compare(f32(1, 1), f32(np.nan, 1), "x", rtol=1e-4, atol=1e-5)


def test_infinities_must_match_in_place_and_sign():
    compare(f32(np.inf, -np.inf), f32(np.inf, -np.inf), "x", rtol=1e-4, atol=1e-5)
    with pytest.raises(Mismatch, match="got -inf"):
        compare(f32(-np.inf), f32(np.inf), "x", rtol=1e-4, atol=1e-5)
    with pytest.raises(Mismatch, match="got 3.4e\\+38|got 3.402823e\\+38"):
        compare(f32(3.4e38), f32(np.inf), "x", rtol=1e-4, atol=1e-5)


def leaf(type_, array=None, device="cpu"):
    return {"type": type_, "device": device, "array": array, "dtype": "float32"}


@pytest.mark.parametrize("got,expect", [
    (leaf("None"), "is None, expected a torch.Tensor .a missing return"),
    (leaf("numpy.ndarray", f32(1)), "is a numpy.ndarray, expected a torch.Tensor .did you call"),
    (leaf("list"), "is a list, expected a torch.Tensor .stack"),
    (leaf("tf.Tensor", f32(1)), "is a tf.Tensor, expected a torch.Tensor"),
    (leaf("__main__.AlwaysEqual"), "is a __main__.AlwaysEqual, expected a torch.Tensor"),
])
def test_wrong_types_get_their_own_message(got, expect):
    with pytest.raises(Mismatch, match=expect):
        tensor(got, "torch", "cpu", "out")


def test_a_tensor_on_the_wrong_device_is_named():
    with pytest.raises(Mismatch, match="is on cpu, expected the cuda device"):
        tensor(leaf("torch.Tensor", f32(1), device="cpu"), "torch", "cuda", "out")
    with pytest.raises(Mismatch, match="is on cuda:0, expected the cpu device"):
        tensor(leaf("torch.Tensor", f32(1), device="cuda:0"), "torch", "cpu", "out")


def test_tuple_arity_is_checked():
    with pytest.raises(Mismatch, match="returned one torch.Tensor; expected a tuple of 2"):
        leaves(leaf("torch.Tensor", f32(1)), 2, "f")
    with pytest.raises(Mismatch, match="tuple of 3 values; expected 2"):
        leaves({"type": "tuple", "items": [leaf("x")] * 3}, 2, "f")
