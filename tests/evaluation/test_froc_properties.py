"""Property tests (hypothesis) for FROC invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_gravity.evaluation import froc_curve
from napari_gravity.types import Detections

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    """A few images on a 40x40 grid, integer coordinates so distances tie often."""
    n_img = draw(st.integers(1, 4))
    gt, pred = {}, {}
    for i in range(n_img):
        n_les = draw(st.integers(0, 4))
        les = draw(
            st.lists(
                st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=n_les, max_size=n_les
            )
        )
        rad = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=n_les, max_size=n_les))
        gt[f"i{i}"] = (np.asarray(les, float).reshape(-1, 2), np.asarray(rad, float))
        n_p = draw(st.integers(0, 8))
        pts = draw(
            st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=n_p, max_size=n_p)
        )
        sc = draw(
            st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]), min_size=n_p, max_size=n_p)
        )
        pred[f"i{i}"] = Detections(np.asarray(pts, float).reshape(-1, 2), np.asarray(sc, float))
    if sum(len(v[0]) for v in gt.values()) == 0:
        gt["i0"] = (np.array([[20.0, 20.0]]), np.array([2.0]))
    return pred, gt


@SETTINGS
@given(cases(), st.sampled_from(["fp", "drop"]), st.sampled_from([1.0, 3.0, 10.0]))
def test_monotone_score_transform_leaves_curve_unchanged(case, dup, gamma):
    pred, gt = case
    r = froc_curve(pred, gt, duplicates=dup)
    warped = {k: Detections(v.points, np.exp(3 * v.scores) * 7 - 2) for k, v in pred.items()}
    w = froc_curve(warped, gt, duplicates=dup)
    np.testing.assert_array_equal(r.tp, w.tp)
    np.testing.assert_array_equal(r.fp, w.fp)
    np.testing.assert_allclose(r.fppi, w.fppi)
    np.testing.assert_allclose(r.tpr, w.tpr)
    assert r.aufroc(gamma) == w.aufroc(gamma)


@SETTINGS
@given(cases(), st.sampled_from(["fp", "drop"]), st.sampled_from([0.5, 2.0, 10.0]))
def test_aufroc_in_unit_interval_and_curve_monotone(case, dup, gamma):
    pred, gt = case
    r = froc_curve(pred, gt, duplicates=dup)
    a = r.aufroc(gamma)
    assert 0.0 <= a <= 1.0
    assert np.all(np.diff(r.fppi) >= 0) and np.all(np.diff(r.tpr) >= 0)
    assert r.fppi[0] == 0 and r.tpr[0] == 0
    assert r.tpr[-1] <= 1.0
    # the curve has one point per distinct counted score, plus the origin
    assert len(r.fppi) == len(np.unique(r.pred_score)) + 1


@SETTINGS
@given(cases(), st.integers(0, 3), st.floats(0.0, 1.0), st.sampled_from(["fp", "drop"]))
def test_adding_a_true_positive_never_lowers_the_curve(case, which, score, dup):
    pred, gt = case
    ids = [k for k, v in gt.items() if len(v[0])]
    iid = ids[which % len(ids)]
    r = froc_curve(pred, gt, duplicates=dup)
    # add an exact hit on a lesion that no prediction matches yet (if any)
    from napari_gravity.evaluation import match_image

    d = pred.get(iid, Detections())
    m = match_image(d.points, d.scores, *gt[iid])
    free = np.setdiff1d(np.arange(len(gt[iid][0])), m.lesion[m.lesion >= 0])
    if len(free) == 0:
        return
    les = gt[iid][0][free[0]]
    pred2 = dict(pred)
    pred2[iid] = Detections(np.vstack([d.points, les]), np.r_[d.scores, score])
    r2 = froc_curve(pred2, gt, duplicates=dup)
    grid = np.linspace(0, 12, 97)
    from napari_gravity.evaluation import curve_value

    assert np.all(curve_value(r2.fppi, r2.tpr, grid) >= curve_value(r.fppi, r.tpr, grid) - 1e-12)
    for gamma in (0.5, 1.0, 10.0):
        assert r2.aufroc(gamma) >= r.aufroc(gamma) - 1e-12
