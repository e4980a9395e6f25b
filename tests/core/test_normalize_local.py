"""The "local" contrast normalisation: invariances that make a model robust to acquisition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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


@pytest.mark.parametrize("shape", [(160, 200), (171, 133)])
@pytest.mark.parametrize("sigma", [10.0, 24.0])
def test_block_smoothing_matches_scipy_block_mean_and_bilinear_resampling(shape, sigma):
    """The torch block mean + upsampling equals a numpy block mean and scipy's order-1
    resampling at block centres (i + 0.5) k − 0.5 with clamped edges; and it stays close to a
    full-resolution Gaussian away from the borders."""
    from napari_gravity.core.normalize import _smooth

    x = _textured(4, shape).astype(np.float32)
    k = int(sigma // 4)
    h, w = shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    xp = np.pad(x, ((0, hp - h), (0, wp - w)), mode="reflect")
    small = xp.reshape(hp // k, k, wp // k, k).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, sigma / k, mode="reflect")
    yy = (np.arange(h) + 0.5) / k - 0.5
    xx = (np.arange(w) + 0.5) / k - 0.5
    ref = ndi.map_coordinates(small, np.meshgrid(yy, xx, indexing="ij"), order=1, mode="nearest")
    got = _smooth(torch.from_numpy(x), sigma).numpy()
    assert got.shape == x.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    full = ndi.gaussian_filter(x.astype(np.float64), sigma, mode="reflect")
    m = int(2 * sigma)  # away from the borders (reflect vs. the block padding)
    inner = (slice(m, h - m), slice(m, w - m))
    assert np.abs(got[inner] - full[inner]).max() < 0.02 * x.std()


@pytest.mark.parametrize("shape,sigma", [((40, 50), 2.5), ((7, 9), 3.0), ((1, 30), 1.2)])
def test_gaussian_equals_scipy_reflect_even_when_the_kernel_outgrows_the_image(shape, sigma):
    from napari_gravity.core.normalize import _gaussian_conv

    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    ref = ndi.gaussian_filter(x.astype(np.float64), sigma, mode="reflect")
    got = _gaussian_conv(torch.from_numpy(x), sigma).numpy()  # the GPU's way, run here
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_the_gpu_median_is_numpys_percentile_50(n, monkeypatch):
    from napari_gravity.core import normalize

    x = np.random.default_rng(n).normal(size=n).astype(np.float32)

    class OnGpu:  # a tensor that says it is elsewhere: _median takes its kthvalue branch
        device = torch.device("cuda")

        def __init__(self, t):
            self.t = t

        def flatten(self):
            return self.t.flatten()

    got = normalize._median(OnGpu(torch.from_numpy(x)))
    assert got == pytest.approx(float(np.percentile(x, 50)), abs=1e-6)
