"""Classical baselines find bright (or dark) dots; the Detector protocol."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_gravity.detectors import Detector, HessianDoG, TopHat
from napari_gravity.detectors.hdog import dog_sigmas
from napari_gravity.evaluation import froc_curve


def dots_image(seed, n=15, size=256, amp=0.6, sigma=(0.8, 1.5)):
    """Bright Gaussian dots on smooth correlated noise (a simple stand-in, not a mammogram)."""
    rng = np.random.default_rng(seed)
    bg = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 12) * 15
    bg += rng.normal(0, 0.03, (size, size))
    pts = rng.uniform(12, size - 12, (n, 2))
    yy, xx = np.mgrid[:size, :size]
    img = bg.copy()
    for y, x in pts:
        s = rng.uniform(*sigma)
        img += amp * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return img.astype(np.float32), pts


@pytest.fixture(scope="module")
def dots():
    return [dots_image(s) for s in range(4)]


@pytest.mark.parametrize("cls", [HessianDoG, TopHat])
def test_baselines_find_bright_dots(cls, dots):
    detector = cls()
    assert isinstance(detector, Detector)
    preds, gt = {}, {}
    for k, (img, pts) in enumerate(dots):
        d = detector.detect(img)
        assert np.all((d.scores >= 0) & (d.scores <= 1))
        preds[f"i{k}"] = d
        gt[f"i{k}"] = (pts, np.full(len(pts), 2.0))
    r = froc_curve(preds, gt)
    sens = r.sensitivity_at([1.0, 8.0])
    # the dots are clearly visible: most must be found at a few FPs per image
    assert sens[8.0] >= 0.8, sens
    assert r.aufroc(10) >= 0.7
    # and a pure-noise image ranks far below the dots
    noise = ndi.gaussian_filter(np.random.default_rng(9).normal(0, 1, (256, 256)), 12) * 15
    d_noise = detector.detect(noise.astype(np.float32))
    if len(d_noise):
        assert np.median(d_noise.scores) < np.median(preds["i0"].scores[:15]) + 1e-9


@pytest.mark.parametrize("cls", [HessianDoG, TopHat])
def test_dark_polarity_and_mask(cls, dots):
    img, pts = dots[0]
    dark = -img
    d_bright = cls(polarity="bright").detect(img)
    d_dark = cls(polarity="dark").detect(dark)
    # same candidates up to float32 rounding (compare the strong ones)
    k = min(20, len(d_bright))
    np.testing.assert_allclose(d_bright.points[:k], d_dark.points[:k], atol=1e-3)
    np.testing.assert_allclose(d_bright.scores[:k], d_dark.scores[:k], atol=1e-4)
    mask = np.zeros(img.shape, bool)
    mask[:, : img.shape[1] // 2] = True
    d = cls().detect(img, mask=mask)
    assert len(d) > 0 and np.all(d.points[:, 1] <= img.shape[1] // 2)
    # a mask away from the image corner: the detector works on the mask's bounding box and
    # must report points in full-image coordinates
    box = np.zeros(img.shape, bool)
    box[60:200, 70:210] = True
    inside = pts[box[pts[:, 0].astype(int), pts[:, 1].astype(int)]]
    d = cls().detect(img, mask=box)
    r = froc_curve({"a": d}, {"a": (inside, np.full(len(inside), 2.0))})
    assert len(inside) >= 3 and r.sensitivity_at([8.0])[8.0] >= 0.8
    with pytest.raises(ValueError, match="polarity"):
        cls(polarity="grey").detect(img)
    with pytest.raises(ValueError, match="2-D"):
        cls().detect(np.zeros((4, 4, 3)))


def test_detectors_on_a_512_tile():
    """A 512×512 tile (the size the old timing assert used; timings live in
    benchmarks/baselines.py): every detector still finds most of the 30 dots."""
    img, pts = dots_image(5, n=30, size=512)
    for det in (HessianDoG(), TopHat()):
        r = froc_curve({"t": det.detect(img)}, {"t": (pts, np.full(len(pts), 2.0))})
        assert r.sensitivity_at([8.0])[8.0] >= 0.8, det.name


def test_hdog_scales_and_min_distance():
    s = dog_sigmas(1.18, 3.1, 1.05)
    assert s[0] == pytest.approx(1.18) and s[-1] >= 3.1 and len(s) == 21
    img, _ = dots_image(2)
    d = HessianDoG(min_distance=5).detect(img)
    dist = np.hypot(*(d.points[:, None, :] - d.points[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 5 - 1e-9
    top = HessianDoG(max_candidates=10).detect(img)
    assert len(top) == 10 and np.all(np.diff(top.scores) <= 0)
