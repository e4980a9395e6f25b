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
