import numpy as np
import pytest

from napari_gravity.core import normalize_image


def test_minmax():
    img = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    out = normalize_image(img)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1.0]])


def test_percentile_is_robust_to_a_hot_pixel():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (100, 100))
    img[0, 0] = 1e6
    out = normalize_image(img, "percentile")
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < np.median(out) < 0.6  # min-max would squash everything to ~0
    assert np.median(normalize_image(img, "minmax")) < 1e-5


def test_constant_image_gives_zeros():
    out = normalize_image(np.full((5, 7), 3.0))
    assert out.shape == (5, 7) and not out.any()


def test_nan_raises_clear_error():
    img = np.ones((4, 4))
    img[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalize_image(img)


def test_mask_statistics():
    img = np.array([[0.0, 100.0], [10.0, 20.0]])
    mask = np.array([[False, False], [True, True]])
    out = normalize_image(img, mask=mask)
    np.testing.assert_allclose(out, [[0, 1], [0, 1]])


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        normalize_image(np.ones((2, 2)), "zscore")
