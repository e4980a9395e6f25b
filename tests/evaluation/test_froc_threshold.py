"""``FROCResult.threshold_at`` (the operating threshold every trained model ships with) against
hand-computed curves, ties and curves that never reach the target FPpI, plus a brute-force
property: the chosen γ is the lowest score whose detections stay within the FPpI budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_gravity.evaluation import froc_curve
from napari_gravity.types import Detections


def det(rows):
    a = np.asarray(rows, dtype=float).reshape(-1, 3)
    return Detections(a[:, :2], a[:, 2])


def gt(rows):
    a = np.asarray(rows, dtype=float).reshape(-1, 3)
    return a[:, :2], a[:, 2]


@pytest.fixture(scope="module")
def curve():
    # 3 images, 3 lesions; by score: 0.9 TP, 0.8 dup (FP), 0.7 FP, 0.6 TP, 0.5 FP
    # fppi = [0, 0, 1/3, 2/3, 2/3, 1] at thresholds [inf, .9, .8, .7, .6, .5]
    gtd = {"a": gt([[10, 10, 2], [50, 50, 3]]), "b": gt([[20, 20, 1]]), "c": gt([])}
    pred = {
        "a": det([[11, 10, 0.9], [12, 10, 0.8], [100, 100, 0.7]]),
        "b": det([[20, 21, 0.6]]),
        "c": det([[5, 5, 0.5]]),
    }
    r = froc_curve(pred, gtd)
    np.testing.assert_allclose(r.fppi, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    return r


@pytest.mark.parametrize(
    ("target", "want"),
    [
        (0.0, 0.9),  # no FP allowed: the TP at 0.9 only
        (0.2, 0.9),
        (1 / 3, 0.8),  # exactly on an operating point: that point counts
        (0.5, 0.8),
        (2 / 3, 0.6),  # FPpI plateau 2/3 at 0.7 and 0.6: the lower keeps the extra TP
        (0.99, 0.6),
        (1.0, 0.5),
        (10.0, 0.5),  # never reached: every prediction (the lowest score)
    ],
)
def test_threshold_at_hand_computed(curve, target, want):
    assert curve.threshold_at(target) == pytest.approx(want)


def test_threshold_at_ties_are_one_operating_point():
    # two images; 0.7 is shared by a TP (image b) and an FP (image a): one operating point,
    # fppi jumps 0 -> 0.5 at 0.7, so a budget of 0.25 FPpI cannot take half of the tie
    gtd = {"a": gt([[10, 10, 2]]), "b": gt([[30, 30, 2]])}
    pred = {
        "a": det([[10, 10, 0.9], [60, 60, 0.7]]),
        "b": det([[30, 30, 0.7], [80, 80, 0.4]]),
    }
    r = froc_curve(pred, gtd)
    np.testing.assert_allclose(r.thresholds[1:], [0.9, 0.7, 0.4])
    np.testing.assert_allclose(r.fppi, [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(r.tpr, [0, 0.5, 1.0, 1.0])
    assert r.threshold_at(0.25) == 0.9
    assert r.threshold_at(0.5) == 0.7
    assert r.threshold_at(0.75) == 0.7
    assert r.threshold_at(1.0) == 0.4


def test_threshold_at_when_even_the_best_prediction_is_over_budget():
    # one image, the top prediction is an FP: FPpI 1 at the first operating point, so no
    # threshold meets 0.5 FPpI: the origin's +inf (nothing detected)
    r = froc_curve({"a": det([[90, 90, 0.95], [10, 10, 0.6]])}, {"a": gt([[10, 10, 2]])})
    assert math.isinf(r.threshold_at(0.5))
    assert r.threshold_at(1.0) == 0.6


def test_threshold_at_without_predictions():
    r = froc_curve({"a": det([])}, {"a": gt([[10, 10, 2]])})
    assert math.isinf(r.threshold_at(1.0))


def _fppi_at(preds, scores_ok, n_images, gtd):
    """FPpI of the predictions kept by a threshold, computed from scratch (new FROC on the
    thresholded set: its last operating point)."""
    kept = {
        k: Detections(v.points[scores_ok(v.scores)], v.scores[scores_ok(v.scores)])
        for k, v in preds.items()
    }
    r = froc_curve(kept, gtd, list(gtd))
    return r.fp[-1] / n_images


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([0.2, 0.35, 0.5, 0.65, 0.8, 0.95]), st.booleans()),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0]),
)
def test_threshold_at_is_the_lowest_score_within_budget(images, target):
    # each image has one lesion at (10, 10); a prediction is either on it or far away (coarse
    # scores so ties across images are common)
    gtd = {f"i{k}": gt([[10, 10, 2]]) for k in range(len(images))}
    preds = {}
    for k, rows in enumerate(images):
        pts = [[10, 10, s] if on else [60 + 5 * j, 60, s] for j, (s, on) in enumerate(rows)]
        preds[f"i{k}"] = det(pts) if pts else det([])
    n = len(images)
    r = froc_curve(preds, gtd, list(gtd))
    thr = r.threshold_at(target)
    if math.isfinite(thr):
        assert _fppi_at(preds, lambda s: s >= thr, n, gtd) <= target + 1e-12
    lower = sorted({s for rows in images for s, _ in rows if s < thr})
    if lower:  # the next lower threshold goes over budget
        assert _fppi_at(preds, lambda s: s >= lower[-1], n, gtd) > target + 1e-12
