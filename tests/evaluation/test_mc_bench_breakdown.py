"""benchmarks/mc_bench_breakdown.py describes false positives as its docstring says."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bd = pytest.importorskip("mc_bench_breakdown")


def test_a_lone_pixel_is_sharp_and_a_blurred_spot_is_not():
    img = np.full((64, 64), 10.0)
    img[20, 20] += 5.0  # a lone bright pixel on a flat background
    yy, xx = np.mgrid[:64, :64]
    img += 5.0 * np.exp(-((yy - 40) ** 2 + (xx - 40) ** 2) / (2 * 2.0**2))  # a blob, σ 2 px
    lone, blob = bd.describe(img, 20.0, 20.0), bd.describe(img, 40.0, 40.0)
    # lone pixel: its 8 neighbours equal the window median, so (5 - 0) / (5 - 0)
    assert lone["sharpness"] == pytest.approx(1.0)
    # blob: neighbours at distance 1 and √2 keep exp(-1/8) and exp(-1/4) of the peak;
    # the window's median is the background (most of the 17² window is > 6 px from the centre)
    expected = 1 - (np.exp(-1 / 8) + np.exp(-1 / 4)) / 2
    assert blob["sharpness"] == pytest.approx(expected, abs=0.01)
    assert bd.describe(img, 3.0, 30.0) is None  # within 8 px of the border
    assert bd.describe(img, 30.0, 60.0) is None


def test_sharpness_and_contrast_by_hand():
    img = np.zeros((40, 40))
    img[::2, :] = 2.0  # even rows 2, odd rows 0
    img[20, 20] = 11.0
    # the 17×17 window (rows 12-28) holds 152 twos, the 11 and 136 zeros: median 2; the
    # centre's neighbours are two 2s on its row and six 0s on the odd rows: mean 0.5
    assert bd.describe(img, 20.0, 20.0)["sharpness"] == pytest.approx((11.0 - 0.5) / (11.0 - 2.0))
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (40, 40))
    noise[20, 20] = 6.0
    win = noise[12:29, 12:29]
    med = np.median(win)
    mad = np.median(np.abs(win - med))
    expected = (noise[19:22, 19:22].mean() - med) / mad
    assert bd.describe(noise, 20.0, 20.0)["contrast"] == pytest.approx(expected)
    # the pixel nearest (19.6, 20.4) is (20, 20): the same description
    assert bd.describe(noise, 19.6, 20.4) == bd.describe(noise, 20.0, 20.0)


def test_false_positives_skip_hits_and_scores_below_the_threshold():
    rng = np.random.default_rng(1)
    img = rng.normal(100.0, 1.0, (96, 96))
    gt = np.array([[30.0, 30.0], [34.0, 36.0], [70.0, 70.0]])
    sample = SimpleNamespace(image=img, points=gt, radii=np.full(3, 2.0), mask=None)
    det = SimpleNamespace(
        points=np.array([[30.2, 29.9], [40.0, 40.0], [60.0, 20.0], [70.0, 70.0]]),
        scores=np.array([0.9, 0.8, 0.7, 0.2]),
    )
    fps = bd.false_positives(sample, det, 0.5)
    # (30.2, 29.9) hits a lesion; (70, 70) is below 0.5; two false positives remain
    assert len(fps) == 2
    # (40, 40) has two lesions within 20 px ((30,30): 14.1, (34,36): 7.2), (60, 20) none
    assert [f["in_cluster"] for f in fps] == [True, False]
    # nearest lesions: (34, 36) for both, at √(36 + 16) and √(26² + 16²) = √932
    assert [f["nearest"] for f in fps] == pytest.approx([np.sqrt(52.0), np.sqrt(932.0)])
    summary = bd.summarise(fps, 4)
    assert summary["fp"] == 2 and summary["fppi"] == 0.5 and summary["in_cluster"] == 1
    assert summary["within_4px_of_a_lesion"] == 0
