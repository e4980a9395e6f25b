"""The "local" contrast normalisation: invariances that make a model robust to acquisition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_gravity.core.normalize import normalize_image


def _textured(seed: int = 0, shape=(200, 220)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = ndi.gaussian_filter(rng.normal(size=shape), 3) * 40
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 1000 + tex + 2.0 * xx + 0.01 * yy**2  # texture on a strong slow trend


def test_gain_and_offset_do_not_change_the_result():
    x = _textured()
    a = normalize_image(x, "local")
    b = normalize_image(37.5 * x + 12345.0, "local")
    assert np.abs(a - b).max() < 1e-4


def test_slow_trend_is_removed_and_background_sits_at_one_half():
    x = _textured()
    z = normalize_image(x, "local")
    assert abs(float(np.median(z)) - 0.5) < 0.02
    # the left and right halves differ by a large trend in x, not in z
    assert abs(float(z[:, :100].mean() - z[:, 120:].mean())) < 0.02


def test_a_tile_sees_what_the_whole_image_sees():
    x = _textured(1, (300, 300))
    whole = normalize_image(x, "local")
    tile = normalize_image(x[60:260, 50:250], "local")
    inner = (slice(70, 130), slice(70, 130))  # far from the tile's borders
    assert np.abs(whole[60:260, 50:250][inner] - tile[inner]).max() < 0.03


def test_small_bright_and_dark_spots_stand_out_with_their_sign():
    x = _textured(2)
    x[50, 60] += 400.0
    x[150, 160] -= 400.0
    z = normalize_image(x, "local")
    assert z[50, 60] == pytest.approx(1.0) or z[50, 60] > 0.9
    assert z[150, 160] < 0.1
    assert 0.0 <= z.min() and z.max() <= 1.0 and z.dtype == np.float32


def test_constant_and_flat_regions_do_not_explode():
    assert np.all(normalize_image(np.full((64, 64), 7.0), "local") == 0.5)
    x = np.zeros((128, 128))
    x[:, 64:] = _textured(3, (128, 64))  # half air (exactly flat), half tissue
    z = normalize_image(x, "local")
    assert np.isfinite(z).all()
    assert np.abs(z[:, :40] - 0.5).max() < 0.05  # air stays at background level
