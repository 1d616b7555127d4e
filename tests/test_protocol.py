import numpy as np
import pytest

from autograder._protocol import ProtocolError, decode, encode


@pytest.mark.parametrize("arr", [np.full((), 3.5, dtype=np.float32), np.arange(6, dtype=np.int64).reshape(2, 3),
                                 np.array([np.nan, np.inf, -np.inf], dtype=np.float32), np.zeros((0, 4)),
                                 np.arange(8, dtype=np.float64).reshape(2, 4)[:, ::2]])
def test_arrays_round_trip_with_shape_and_dtype(arr):
    back = decode(encode({"a": arr}).rstrip(b"\n"))["a"]
    assert back.shape == arr.shape and back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_object_arrays_cannot_be_sent():
    with pytest.raises(TypeError):
        encode({"a": np.array([object()])})


@pytest.mark.parametrize("bad", [
    b'{"__nd__": "|O", "shape": [1], "b64": ""}',           # pickled objects are never accepted
    b'{"__nd__": "<f4", "shape": [2], "b64": "AAAAAA=="}',  # byte count does not match the shape
    b'{"__nd__": "<f4", "shape": [-1], "b64": ""}',
    b'[1, 2]',
    b'not json',
])
def test_bad_messages_are_refused(bad):
    with pytest.raises(ProtocolError):
        decode(bad)
