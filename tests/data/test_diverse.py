"""Lesion families, domain-randomised generators and the family-labelled benchmarks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_gravity.core.normalize import normalize_image
from napari_gravity.data.synthetic import make_benchmark
from napari_gravity.data.synthetic.diverse import (
    _orient,
    _resample,
    diverse_fundus,
    diverse_mammogram,
)
from napari_gravity.data.synthetic.lesions import MA_FAMILIES, MC_FAMILIES, render_ma, render_mc


@pytest.mark.parametrize("family", [f for f in MC_FAMILIES if f != "cast"])
def test_symmetric_mc_families_are_centred_and_sized(family):
    # the intensity centroid of a point-symmetric lesion is its centre (middle pixel + offset)
    rng = np.random.default_rng(1)
    off = (0.3, -0.2)
    patch, got = render_mc(family, 3.0, rng, psf_sigma=0.6, offset=off)
    assert np.allclose(got, off)
    half = patch.shape[0] // 2
    cy, cx = ndi.center_of_mass(np.clip(patch, 0, None))
    assert abs(cy - half - off[0]) < 0.15 and abs(cx - half - off[1]) < 0.15
    assert patch.max() == pytest.approx(1.0)
    # the lesion's extent (10 % of the peak) is about its radius, never far beyond it
    ys, xs = np.nonzero(patch > 0.1)
    extent = np.hypot(ys - half - off[0], xs - half - off[1]).max()
    assert 1.5 < extent < 3.0 + 2.5


def test_families_differ():
    # independently designed: the normalised profiles of two families are not the same drawing
    rng = np.random.default_rng(0)
    p = {f: render_mc(f, 4.0, rng, psf_sigma=0.3, offset=(0, 0))[0] for f in MC_FAMILIES}
    n = min(x.shape[0] for x in p.values())
    crop = {f: x[(x.shape[0] - n) // 2 :][:n, (x.shape[0] - n) // 2 :][:, :n] for f, x in p.items()}
    for a in MC_FAMILIES:
        for b in MC_FAMILIES:
            if a < b:
                assert np.abs(crop[a] - crop[b]).max() > 0.2, (a, b)
    # a ring is lucent in the middle: its centre is darker than its rim
    ring = p["ring"]
    h = ring.shape[0] // 2
    assert ring[h, h] < 0.8 * ring.max()


@pytest.mark.parametrize("family", MA_FAMILIES)
def test_ma_families_are_dark_spots_at_their_centre(family):
    patch, _ = render_ma(family, 2.5, np.random.default_rng(3), offset=(0.0, 0.0))
    h = patch.shape[0] // 2
    assert patch[h, h] == pytest.approx(patch.max(), rel=0.05)
    if family == "halo":
        assert patch.min() < 0  # the halo around it is brighter than the background


def test_orient_moves_points_with_pixels():
    rng = np.random.default_rng(5)
    for _ in range(16):
        img = np.zeros((7, 11))
        pts = np.array([[1.0, 8.0], [5.0, 2.0]])
        img[1, 8], img[5, 2] = 1.0, 2.0
        out, _mask, p = _orient(rng, img, np.ones_like(img, bool), pts)
        for (y, x), v in zip(p, (1.0, 2.0), strict=True):
            assert out[round(y), round(x)] == v


def test_resample_maps_pixel_centres():
    img = np.zeros((40, 40))
    y0, x0 = 17.3, 22.6
    yy, xx = np.mgrid[0:40, 0:40]
    img = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 2.0**2))
    out, _, p, r = _resample(
        img, np.ones((40, 40), bool), np.array([[y0, x0]]), np.array([2.0]), (56, 28)
    )
    cy, cx = ndi.center_of_mass(out)
    assert abs(cy - p[0, 0]) < 0.2 and abs(cx - p[0, 1]) < 0.2
    assert p[0, 0] == pytest.approx((y0 + 0.5) * 56 / 40 - 0.5)
    assert r[0] == pytest.approx(2.0 * np.sqrt(56 / 40 * 28 / 40))


@pytest.mark.parametrize("family", MC_FAMILIES)
def test_diverse_mammogram_lesions_are_where_the_points_are(family):
    s = diverse_mammogram((160, 160), 11, family=family, has_lesions=True, snr=(25.0, 25.0))
    again = diverse_mammogram((160, 160), 11, family=family, has_lesions=True, snr=(25.0, 25.0))
    assert np.array_equal(s.image, again.image)  # deterministic from the seed
    assert 0.05 <= s.spacing[0] <= 0.10
    assert s.image.max() < 2**16 and np.array_equal(s.image, np.round(s.image))
    assert len(s.points) > 0
    z = normalize_image(s.image, "local")
    peak = ndi.maximum_filter(z, size=5)
    at = np.array([peak[round(y), round(x)] for y, x in s.points])
    # obvious lesions (SNR 25) stand out from the background's local contrast
    assert np.median(at) > np.percentile(z, 99)


@pytest.mark.parametrize("family", MA_FAMILIES)
def test_diverse_fundus_lesions_are_dark(family):
    s, rgb = diverse_fundus(
        (192, 192), 4, family=family, has_lesions=True, depth=(0.6, 0.6), rgb=True
    )
    assert np.array_equal(rgb[..., 1].astype(np.float32), s.image)
    assert len(s.points) > 0
    z = normalize_image(s.image, "local")
    low = ndi.minimum_filter(z, size=3)
    at = np.array([low[round(y), round(x)] for y, x in s.points])
    assert np.median(at) < np.percentile(z[s.mask], 10)


def test_benchmark_records_one_family_per_image(tmp_path):
    info = make_benchmark(
        tmp_path / "b",
        "mc-diverse",
        counts={"train": 5, "val": 0, "test": 5},
        size=(96, 96),
        semi_real=0.0,
    )
    assert info["counts"]["train"] == 5
    with open(tmp_path / "b" / "families.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    train = [r["family"] for r in rows if r["split"] == "train"]
    assert train == list(MC_FAMILIES)  # in turn
    assert {r["background"] for r in rows} == {"synthetic"}


class _MidRng:
    """A stand-in generator: every draw is the middle of its range, noise is zero."""

    def uniform(self, a=0.0, b=1.0, size=None):
        return (a + b) / 2 if size is None else np.full(size, (a + b) / 2)

    def integers(self, *args, **kwargs):
        return 0  # the Gaussian PSF

    def standard_normal(self, shape):
        return np.zeros(shape)

    def normal(self, loc, scale, shape):
        return np.full(shape, float(loc))


def test_exposure_chain_contrast_follows_the_film_curve():
    from napari_gravity.data.synthetic.diverse import _exposure_chain

    # density ramp 0 → 1 across x with the same small bump at 15 %, 50 % and 85 % of it
    h, w = 64, 200
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ramp = xx / (w - 1)
    bump = lambda x0: 0.05 * np.exp(-((yy - 32) ** 2 + (xx - x0) ** 2) / (2 * 1.5**2))  # noqa: E731
    xs = (30, 100, 170)
    img = ramp + sum(bump(x) for x in xs)
    t = _exposure_chain(_MidRng(), img, np.ones((h, w), bool))
    flat = _exposure_chain(_MidRng(), ramp, np.ones((h, w), bool))
    contrast = [t[32, x] - flat[32, x] for x in xs]
    # dense calcifications stay bright after attenuation and the curve (sign kept) ...
    assert all(c > 0 for c in contrast)
    # ... and a sigmoid around the median density shows them best in mid-density tissue
    assert contrast[1] > 1.5 * contrast[0] and contrast[1] > 1.5 * contrast[2]
    # the display rises with density everywhere (a monotone characteristic curve)
    assert np.all(np.diff(flat[32]) > 0)


def test_exposure_images_keep_lesions_bright_and_in_range():
    bright, total = 0, 0
    for seed in range(8):
        s = diverse_mammogram(
            (192, 192), seed=seed, exposure=1.0, has_lesions=True, snr=(8.0, 12.0), real=seed % 2
        )
        img = s.image
        assert np.isfinite(img).all() and img.min() >= 0 and img.max() < 2**16
        assert np.array_equal(img, np.round(img))
        for y, x in s.points:
            cy, cx = round(float(y)), round(float(x))
            yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
            d = np.hypot(yy - cy, xx - cx)
            ring = img[(d >= 6) & (d <= 10)]
            total += 1
            bright += img[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].max() > np.median(ring)
    assert total > 20 and bright / total > 0.8


def _standing_out(sample) -> tuple[int, int]:
    """(calcifications whose smoothed 3×3 peak exceeds the 75th percentile of their 6-10 px
    ring, calcifications): what a matched filter (σ 1) would see."""
    img = ndi.gaussian_filter(sample.image, 1.0)
    yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
    bright = 0
    for y, x in sample.points:
        cy, cx = round(float(y)), round(float(x))
        d = np.hypot(yy - cy, xx - cx)
        peak = img[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].max()
        bright += int(peak > np.percentile(img[(d >= 6) & (d <= 10)], 75))
    return bright, len(sample.points)


def test_quantum_noise_dominates_texture_and_keeps_lesions_visible():
    from napari_gravity.data.synthetic._common import highpass_std

    ratios, bright, total = [], 0, 0
    for seed in range(6):
        kw = dict(seed=seed, has_lesions=True, snr=(6.0, 8.0), real=False)
        quiet = diverse_mammogram((192, 192), quantum=0.0, **kw)
        noisy = diverse_mammogram((192, 192), quantum=1.0, **kw)
        # pixel-scale (σ 1) fluctuation against the texture scale (σ 4), same window
        fine = [
            highpass_std(s.image, s.mask, sigma=1.0) / highpass_std(s.image, s.mask)
            for s in (quiet, noisy)
        ]
        ratios.append(fine[1] / fine[0])
        b, n = _standing_out(noisy)
        bright, total = bright + b, total + n
    # the noisy images' fine-scale fluctuation is a larger share of their texture ...
    assert np.median(ratios) > 1.3
    # ... and their calcifications still stand out once smoothed
    assert total > 20 and bright / total > 0.8


def test_dr_mtf_keeps_by_hand_and_blurs_less_with_a_higher_knee():
    from napari_gravity.data.synthetic.diverse import _dr_mtf, _mtf_peak_kept

    flat = {"f0": 1e9, "aperture": 0.0}  # no aperture, knee at infinity: MTF ≡ 1
    assert np.allclose(_dr_mtf((8, 8), flat), 1.0)
    assert _mtf_peak_kept(flat, 4.0) == pytest.approx(1.0, abs=1e-9)
    # the MTF at the knee frequency is sinc² of the aperture over 2 (Lorentzian halves it)
    m = _dr_mtf((64, 64), {"f0": 0.25, "aperture": 1.0})
    assert m[0, 16] == pytest.approx(np.sinc(0.25) / 2)
    kept = [_mtf_peak_kept({"f0": f, "aperture": 1.0}, 4.0) for f in (0.12, 0.2, 0.4)]
    assert kept == sorted(kept) and kept[0] < 0.8
    assert _mtf_peak_kept({"f0": 0.12, "aperture": 1.0}, 2.0) < kept[0]  # smaller: more lost


def test_detector_noise_is_correlated_and_lesions_stay_visible():
    """The digital-detector chain passes its input and its noise through the MTF: on a white
    texture, neighbouring output pixels are correlated, and with a flat MTF (a second run of
    the same chain) they are not; the calcifications, brightened by what the MTF and the noise
    take, still stand out."""
    from napari_gravity.data.synthetic.diverse import _dr_chain

    rng = np.random.default_rng(0)
    img = 100.0 + rng.normal(0, 1.0, (128, 128))
    mask = np.ones(img.shape, bool)
    base = {"noise": 1.0, "a": 2.0, "usm_sigma": 20.0, "usm_gain": 0.5}

    def lag1(dr):
        out = _dr_chain(np.random.default_rng(1), img, mask, {**base, **dr})
        return np.corrcoef(out[:, :-1].ravel(), out[:, 1:].ravel())[0, 1]

    assert lag1({"f0": 0.15, "aperture": 1.0}) > 0.5
    assert abs(lag1({"f0": 1e9, "aperture": 0.0})) < 0.1
    bright, total = 0, 0
    for seed in range(6):
        kw = dict(seed=seed, has_lesions=True, snr=(6.0, 8.0), real=False)
        b, n = _standing_out(diverse_mammogram((192, 192), detector=1.0, **kw))
        bright, total = bright + b, total + n
    assert total > 20 and bright / total > 0.8
    # off by default: the same seed without the option draws the same image as before
    a = diverse_mammogram((96, 96), seed=3, real=False)
    b = diverse_mammogram((96, 96), seed=3, real=False, detector=0.0)
    assert np.array_equal(a.image, b.image)


class _ScriptRng:
    """A stand-in generator whose uniform draws are scripted fractions of their range."""

    def __init__(self, fractions: list[float], quality: int):
        self.fractions, self.quality = list(fractions), quality

    def uniform(self, a=0.0, b=1.0, size=None):
        return a + (b - a) * self.fractions.pop(0)

    def integers(self, lo, hi=None):
        return self.quality


def _blockiness(img: np.ndarray) -> float:
    """Mean |step| across the 8-px JPEG block edges over the mean |step| elsewhere."""
    d = np.abs(np.diff(img.astype(float), axis=1))
    edge = (np.arange(d.shape[1]) % 8) == 7
    return float(d[:, edge].mean() / d[:, ~edge].mean())


def test_8bit_export_windows_by_hand_and_jpeg_leaves_its_block_grid():
    from napari_gravity.data.synthetic.diverse import _export_8bit

    rng = np.random.default_rng(0)
    xx = np.mgrid[0:128, 0:128][1]
    t = ndi.gaussian_filter(rng.normal(size=(128, 128)), 3.0) + xx / 128.0
    mask = np.ones(t.shape, bool)
    # percentiles 0 and 100 (the range), gamma 1.05, no JPEG: the hand-made quantisation
    lossless = _export_8bit(_ScriptRng([0.0, 1.0, 0.5, 0.9], 0), t, mask)
    hand = np.round(255 * ((t - t.min()) / (t.max() - t.min())) ** 1.05)
    assert np.array_equal(lossless, hand)
    # with JPEG at quality 50 the 8×8 grid shows; the lossless export has none
    jpeg = _export_8bit(_ScriptRng([0.0, 1.0, 0.5, 0.1], 50), t, mask)
    assert jpeg.shape == t.shape and np.array_equal(jpeg, np.round(jpeg))
    assert 0 <= jpeg.min() and jpeg.max() <= 255 and not np.array_equal(jpeg, lossless)
    assert np.abs(jpeg - lossless).mean() < 4  # a lossy copy of it, not another image
    assert _blockiness(jpeg) > 1.2 > _blockiness(lossless)


def test_exported_mammograms_are_8_bit_and_keep_lesions_visible():
    bright, total = 0, 0
    for seed in range(6):
        kw = dict(seed=seed, has_lesions=True, snr=(6.0, 8.0), real=False)
        s = diverse_mammogram((192, 192), export=1.0, **kw)
        assert s.image.min() >= 0 and s.image.max() <= 255
        assert np.array_equal(s.image, np.round(s.image))
        b, n = _standing_out(s)
        bright, total = bright + b, total + n
    assert total > 20 and bright / total > 0.8
    # off by default: the same seed without the option draws the same image as before
    a = diverse_mammogram((96, 96), seed=3, real=False)
    b = diverse_mammogram((96, 96), seed=3, real=False, export=0.0)
    assert np.array_equal(a.image, b.image)
