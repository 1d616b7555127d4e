"""The generated digits: the same images for the same seed in every process, in either layout."""
import numpy as np
import pytest

from autograder.datasets import DIGIT_GLYPHS, digits


def test_the_same_seed_draws_the_same_digits_and_another_seed_others():
    x1, y1 = digits(50, seed=3)
    x2, y2 = digits(50, seed=3)
    x3, _ = digits(50, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_shapes_dtypes_labels_and_the_two_layouts():
    x, y = digits(200, seed=0)
    xl, yl = digits(200, seed=0, channels_last=True)
    assert x.shape == (200, 1, 8, 8) and x.dtype == np.float32
    assert xl.shape == (200, 8, 8, 1) and np.array_equal(xl[..., 0], x[:, 0]) and np.array_equal(y, yl)
    assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) == 10


def test_without_noise_each_image_is_its_glyph_and_classes_are_separable():
    x, y = digits(300, seed=1, noise=0.0)
    glyphs = np.array([[[c == "#" for c in row] for row in g] for g in DIGIT_GLYPHS], dtype=np.float32)
    # Nearest glyph (over every placement) recovers every label: the classes are distinct images, not noise.
    for image, label in zip(x[:, 0], y):
        scores = [max(float((image[r:r + 7, c:c + 5] * glyphs[k]).sum() / glyphs[k].sum() -
                            (image[r:r + 7, c:c + 5] * (1 - glyphs[k])).sum() / (1 - glyphs[k]).sum())
                      for r in range(2) for c in range(4)) for k in range(10)]
        assert int(np.argmax(scores)) == label


def test_a_negative_size_is_refused():
    with pytest.raises(ValueError, match="n must be >= 0"):
        digits(-1)
