"""FROC matching, curve and AUFROC on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.evaluation import (
    EvaluationError,
    curve_value,
    evaluate_detections,
    froc_curve,
    match_image,
    partial_area,
)
from napari_gravity.evaluation.froc import DUPLICATE, FP, IGNORED, TP
from napari_gravity.types import Detections, Sample


def det(rows):
    a = np.asarray(rows, dtype=float).reshape(-1, 3)
    return Detections(a[:, :2], a[:, 2])


def gt(rows):
    a = np.asarray(rows, dtype=float).reshape(-1, 3)
    return a[:, :2], a[:, 2]


# ---------------------------------------------------------------- matching


def test_match_nearest_free_lesion_and_duplicates():
    # two lesions 4 px apart, radius 2 -> criterion distance 4
    g_pts, g_rad = gt([[10, 10, 2], [10, 14, 2]])
    p = [[10, 13, 0.9], [10, 12, 0.8], [10, 11, 0.7], [30, 30, 0.6]]
    m = match_image(np.array(p)[:, :2], np.array(p)[:, 2], g_pts, g_rad)
    # 0.9 at x=13: nearest lesion is x=14 (dist 1) -> TP(1)
    # 0.8 at x=12: both within 4; x=14 taken -> x=10 (dist 2) -> TP(0)
    # 0.7 at x=11: within distance of both, both taken -> duplicate
    # 0.6 far away -> FP
    assert m.labels.tolist() == [TP, TP, DUPLICATE, FP]
    assert m.lesion.tolist() == [1, 0, -1, -1]


def test_match_score_order_not_input_order():
    g_pts, g_rad = gt([[0, 0, 3]])
    p = np.array([[0, 1], [0, 2]], float)
    m = match_image(p, np.array([0.2, 0.7]), g_pts, g_rad)
    assert m.labels.tolist() == [DUPLICATE, TP]


def test_match_criterion_bbox_and_fixed():
    g_pts, g_rad = gt([[0, 0, 2.5]])  # bbox criterion = 5 (inclusive)
    p = np.array([[3, 4], [0, 5.01]], float)
    m = match_image(p, np.array([0.9, 0.8]), g_pts, g_rad)
    assert m.labels.tolist() == [TP, FP]
    # tiny radius: criterion never below 1 px
    m = match_image(np.array([[0, 1.0]]), [0.5], [[0, 0]], [0.1])
    assert m.labels.tolist() == [TP]
    m = match_image(np.array([[0, 1.5]]), [0.5], [[0, 0]], [0.1])
    assert m.labels.tolist() == [FP]
    # fixed distance ignores radii (and needs none)
    m = match_image(np.array([[0, 6.0], [0, 8]]), [0.9, 0.8], [[0, 0]], None, match=7)
    assert m.labels.tolist() == [TP, FP]
    with pytest.raises(EvaluationError, match="radius"):
        match_image(np.array([[0, 6.0]]), [0.9], [[0, 0]], None)


def test_match_mask_ignores_outside():
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    m = match_image(
        np.array([[5, 15.0], [5, 5], [5, 25]]), [0.9, 0.8, 0.7], [[5, 15]], [2], mask=mask
    )
    # the one on the lesion is outside the mask: ignored, not a TP
    assert m.labels.tolist() == [IGNORED, FP, IGNORED]


# ---------------------------------------------------------------- curves


def test_curve_hand_computed_with_duplicates_fp():
    gtd = {"a": gt([[10, 10, 2], [50, 50, 3]]), "b": gt([[20, 20, 1]]), "c": gt([])}
    pred = {
        "a": det([[11, 10, 0.9], [12, 10, 0.8], [100, 100, 0.7]]),
        "b": det([[20, 21, 0.6]]),
        "c": det([[5, 5, 0.5]]),
    }
    r = froc_curve(pred, gtd)
    assert r.n_images == 3 and r.n_lesions == 3
    np.testing.assert_allclose(r.tpr, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(r.fppi, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(r.thresholds[1:], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert np.isinf(r.thresholds[0])
    # area: 1/3*1/3 + 1/3*1/3 + 1/3*2/3 + 9*2/3 = 58/9 ; / 10
    assert r.aufroc(10) == pytest.approx(58 / 90)
    assert r.counts["duplicates"] == 1 and r.counts["fp"] == 3 and r.counts["tp"] == 2
    # interpolation at γ inside a segment: γ = 0.5 lies between (1/3,1/3) and (2/3,1/3)
    assert r.aufroc(0.5) == pytest.approx((1 / 9 + 1 / 6 * 1 / 3) / 0.5)


def test_curve_duplicates_drop():
    gtd = {"a": gt([[10, 10, 2], [50, 50, 3]]), "b": gt([[20, 20, 1]]), "c": gt([])}
    pred = {
        "a": det([[11, 10, 0.9], [12, 10, 0.8], [100, 100, 0.7]]),
        "b": det([[20, 21, 0.6]]),
        "c": det([[5, 5, 0.5]]),
    }
    r = froc_curve(pred, gtd, duplicates="drop")
    np.testing.assert_allclose(r.fppi, [0, 0, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(r.tpr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # 1/3*1/3 + (vertical) + 1/3*2/3 + (10-2/3)*2/3 = 59/9
    assert r.aufroc(10) == pytest.approx(59 / 90)
    assert r.counts["predictions_counted"] == 4


def test_ties_enter_together():
    gtd = {"a": gt([[0, 0, 2], [40, 40, 2]])}
    pred = {"a": det([[0, 1, 0.5], [20, 20, 0.5], [40, 41, 0.5], [60, 60, 0.2]])}
    r = froc_curve(pred, gtd)
    # one point for the three tied predictions: 2 TP and 1 FP at once
    np.testing.assert_allclose(r.tpr, [0, 1.0, 1.0])
    np.testing.assert_allclose(r.fppi, [0, 1.0, 2.0])
    # area: trapezoid (0,0)-(1,1) = 0.5, then 9 at TPR 1
    assert r.aufroc(10) == pytest.approx(0.95)


def test_lesion_free_images_count_in_fppi():
    gtd = {"a": gt([[0, 0, 2]])}
    pred = {"a": det([[0, 1, 0.9], [30, 30, 0.8]])}
    r1 = froc_curve(pred, gtd, ["a"])
    r4 = froc_curve(pred, gtd, ["a", "n1", "n2", "n3"])
    assert r1.fppi[-1] == pytest.approx(1.0)
    assert r4.fppi[-1] == pytest.approx(0.25)
    assert r4.counts["lesion_free_images"] == 3
    # FPs only on lesion-free images (paper 002): FPs of "a" no longer count
    pred["n1"] = det([[3, 3, 0.85]])
    r = froc_curve(pred, gtd, ["a", "n1", "n2", "n3"], fp_images="lesion-free")
    assert r.n_fp_images == 3
    np.testing.assert_allclose(r.fppi, [0, 0, 1 / 3])
    np.testing.assert_allclose(r.tpr, [0, 1, 1])


def test_curve_stopping_before_gamma_extends_flat():
    gtd = {"a": gt([[0, 0, 2], [20, 20, 2]])}
    pred = {"a": det([[0, 0, 0.9], [50, 50, 0.4]])}
    r = froc_curve(pred, gtd, ["a", "b"])  # last point (0.5, 0.5)
    # 0.5*0.5 at FPpI from 0 to 0.5 (vertical rise at 0), then flat 0.5 up to 10
    assert r.aufroc(10) == pytest.approx(0.5)
    assert r.aufroc(1) == pytest.approx(0.5)
    assert r.sensitivity_at([8])[8.0] == pytest.approx(0.5)


def test_partial_area_interpolates_at_gamma():
    x = np.array([0, 1, 4.0])
    y = np.array([0, 0.5, 1.0])
    # up to γ=2: 0.25 + trapezoid from 1 to 2 with y(2) = 0.5 + 0.5/3
    y2 = 0.5 + 0.5 / 3
    assert partial_area(x, y, 2.0) == pytest.approx((0.25 + (0.5 + y2) / 2) / 2)
    assert curve_value(x, y, [2.0])[0] == pytest.approx(y2)
    # vertical step: highest TPR at that FPpI
    assert curve_value([0, 1, 1, 2], [0, 0.2, 0.6, 0.6], [1.0])[0] == pytest.approx(0.6)
    # several rows at once
    rows = partial_area(np.vstack([x, x]), np.vstack([y, y / 2]), 2.0)
    assert rows[1] == pytest.approx(rows[0] / 2)


def test_no_predictions_gives_zero():
    r = froc_curve({}, {"a": gt([[0, 0, 2]])})
    assert r.aufroc() == 0.0
    assert r.tpr.tolist() == [0.0]


def test_errors():
    with pytest.raises(EvaluationError, match="not in the image list"):
        froc_curve({"x": det([[0, 0, 0.5]])}, {"a": gt([[0, 0, 2]])}, ["a"])
    with pytest.raises(EvaluationError, match="no lesions"):
        froc_curve({"a": det([[0, 0, 0.5]])}, {}, ["a"])
    with pytest.raises(EvaluationError, match="duplicates"):
        froc_curve({}, {"a": gt([[0, 0, 2]])}, duplicates="keep")


def test_fp_per_cm2_and_evaluate_detections():
    img = np.zeros((100, 100), np.float32)
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True
    samples = [
        Sample(img, [[10, 10]], [2], mask=mask, image_id="a", spacing=(0.1, 0.1)),
        Sample(img, np.zeros((0, 2)), [], mask=mask, image_id="b", spacing=(0.1, 0.1)),
    ]
    dets = {
        "a": det([[10, 11, 0.9], [20, 20, 0.5], [20, 80, 0.95]]),  # last: outside mask
        "b": det([[30, 30, 0.4]]),
    }
    rep, res = evaluate_detections(dets, samples, return_result=True)
    assert rep["counts"]["ignored_outside_mask"] == 1
    assert rep["counts"]["fp"] == 2
    # tissue = 50x100 px at 0.1 mm -> 0.5 cm² per image, 1 cm² in all
    assert rep["area_cm2"] == pytest.approx(1.0)
    assert rep["fp_per_cm2"][-1] == pytest.approx(2.0)
    # curve in FP/cm²: (0,0) (0,1) (1,1) (2,1): TPR 1 from 0 FP/cm² on
    assert rep["per_cm2"]["sensitivity_at"]["0.4"] == pytest.approx(1.0)
    assert rep["per_cm2"]["pauc_1"] == pytest.approx(1.0)
    assert rep["aufroc"] == pytest.approx(res.aufroc(10))
    assert set(rep) >= {"aufroc", "sensitivity_at", "fppi", "tpr", "thresholds", "counts"}
    rep2 = evaluate_detections(dets, samples, use_masks=False, bootstrap=50)
    assert rep2["counts"]["ignored_outside_mask"] == 0
    assert rep2["bootstrap"]["n_resamples"] == 50
