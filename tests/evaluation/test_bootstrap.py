"""The vectorised bootstrap against a slow reference loop that re-matches every resample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.evaluation import bootstrap as bs
from napari_gravity.evaluation import (
    bootstrap_froc,
    compare_bootstrap,
    curve_value,
    froc_curve,
    resample_weights,
)
from napari_gravity.evaluation.bootstrap import default_grid
from napari_gravity.types import Detections


def make_case(seed, n_img=12, quality=0.6):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for i in range(n_img):
        n_les = int(rng.integers(0, 5)) if i % 3 else 0
        les = rng.uniform(0, 100, (n_les, 2))
        rad = rng.uniform(0.5, 3, n_les)
        gt[f"im{i}"] = (les, rad)
        n_fp = int(rng.integers(0, 10))
        pts = [rng.uniform(0, 100, (n_fp, 2))]
        sc = [np.round(rng.uniform(0, 0.8, n_fp), 2)]  # rounded: many ties
        hit = rng.random(n_les) < quality
        pts.append(les[hit] + rng.normal(0, 0.5, (hit.sum(), 2)))
        sc.append(np.round(rng.uniform(0.3, 1, hit.sum()), 2))
        dup = rng.random(n_les) < 0.3
        pts.append(les[dup] + 0.3)
        sc.append(np.round(rng.uniform(0, 1, dup.sum()), 2))
        pred[f"im{i}"] = Detections(np.concatenate(pts), np.concatenate(sc))
    return pred, gt


def slow_reference(pred, gt, ids, weights, gamma, grid, **kw):
    """Rebuild every resample as a new data set (copies renamed) and re-match it."""
    auf, curves = [], []
    for w in weights:
        p2, g2, ids2 = {}, {}, []
        for k, iid in enumerate(ids):
            for c in range(int(w[k])):
                name = f"{iid}#{c}"
                ids2.append(name)
                if iid in pred:
                    p2[name] = pred[iid]
                if iid in gt:
                    g2[name] = gt[iid]
        r = froc_curve(p2, g2, ids2, **kw)
        auf.append(r.aufroc(gamma))
        curves.append(curve_value(r.fppi, r.tpr, grid))
    return np.array(auf), np.array(curves)


@pytest.mark.parametrize(
    ("dup", "fp_images"), [("fp", "all"), ("drop", "all"), ("fp", "lesion-free")]
)
@pytest.mark.parametrize("gamma", [1.0, 10.0])
def test_bootstrap_matches_slow_reference(dup, fp_images, gamma):
    pred, gt = make_case(3)
    ids = list(gt)
    r = froc_curve(pred, gt, ids, duplicates=dup, fp_images=fp_images)
    w = resample_weights(len(ids), 40, seed=5)
    # guarantee a lesion and a lesion-free image in every resample (no degenerate resample)
    with_les = next(k for k, i in enumerate(ids) if len(gt[i][0]))
    free = next(k for k, i in enumerate(ids) if not len(gt[i][0]))
    w[:, with_les] = np.maximum(w[:, with_les], 1)
    w[:, free] = np.maximum(w[:, free], 1)
    grid = default_grid(gamma, [0.5, 1.0])
    b = bootstrap_froc(r, weights=w, max_fppi=gamma, grid=grid, sensitivity_fppi=[0.5, 1.0])
    ref_auf, ref_curves = slow_reference(
        pred, gt, ids, w, gamma, grid, duplicates=dup, fp_images=fp_images
    )
    np.testing.assert_allclose(b.aufroc, ref_auf, atol=1e-12)
    np.testing.assert_allclose(b.tpr_mean, ref_curves.mean(0), atol=1e-12)
    np.testing.assert_allclose(b.tpr_lo, np.percentile(ref_curves, 2.5, axis=0), atol=1e-12)
    np.testing.assert_allclose(b.sens[1.0], curve_value_rows(ref_curves, grid, 1.0))


def curve_value_rows(curves, grid, f):
    return curves[:, int(np.nonzero(grid == f)[0][0])]


def test_bootstrap_truncated_prefix_agrees_with_full_evaluation(monkeypatch):
    """Many predictions per image: the bootstrap evaluates a score prefix and redoes the rare
    resamples whose curve stops early; both must agree with the re-matching reference."""
    rng = np.random.default_rng(0)
    gt, pred = {}, {}
    for i in range(15):
        les = rng.uniform(0, 200, (int(rng.integers(0, 6)), 2))
        gt[f"i{i}"] = (les, np.full(len(les), 2.0))
        n = int(rng.integers(0, 400)) if i % 5 else 0
        pts = np.concatenate([rng.uniform(0, 200, (n, 2)), les + 0.5])
        sc = np.concatenate([rng.uniform(0, 0.9, n), rng.uniform(0.2, 1, len(les))])
        pred[f"i{i}"] = Detections(pts, sc)
    gt["i1"] = (np.array([[10.0, 10.0]]), np.array([2.0]))
    ids = list(gt)
    r = froc_curve(pred, gt, ids)
    w = resample_weights(len(ids), 30, seed=2)
    w[:, 1] = np.maximum(w[:, 1], 1)  # i1 has a lesion
    # resamples made mostly of images without FPs: their curves stop early in the prefix
    w[0] = 0
    w[0, [0, 5, 10]] = 4
    w[0, 1] = 3
    w[1] = 0
    w[1, [5, 1]] = [14, 1]
    calls = []
    real = bs._curves

    def spy(p, weights):
        calls.append(len(p.order_img))
        return real(p, weights)

    monkeypatch.setattr(bs, "_curves", spy)
    b = bootstrap_froc(r, weights=w, max_fppi=2.0)
    assert len(set(calls)) == 2 and min(calls) < len(r.pred_score)  # prefix + redo on all
    ref, _ = slow_reference(pred, gt, ids, w, 2.0, np.array([0.0]))
    np.testing.assert_allclose(b.aufroc, ref, atol=1e-12)


def test_bootstrap_seeded_and_ci_contains_estimate():
    pred, gt = make_case(1, n_img=30, quality=0.7)
    r = froc_curve(pred, gt)
    b1 = bootstrap_froc(r, 300, seed=11)
    b2 = bootstrap_froc(r, 300, seed=11)
    np.testing.assert_array_equal(b1.aufroc, b2.aufroc)
    lo, hi = b1.aufroc_ci
    assert lo <= r.aufroc() <= hi
    assert np.all(b1.tpr_lo <= b1.tpr_mean + 1e-12) and np.all(b1.tpr_mean <= b1.tpr_hi + 1e-12)
    d = b1.to_dict()
    assert d["n_resamples"] == 300 and len(d["grid_fppi"]) == len(d["tpr_mean"])


def test_resample_weights_counts():
    w = resample_weights(7, 50, seed=0)
    assert w.shape == (50, 7)
    assert np.all(w.sum(axis=1) == 7)


def test_paired_comparison():
    pred, gt = make_case(2, n_img=40, quality=0.9)
    ids = list(gt)
    # B: the same detections with the true positives' scores scrambled -> worse
    rng = np.random.default_rng(0)
    worse = {k: Detections(v.points, rng.permutation(v.scores) * 0.5) for k, v in pred.items()}
    ra, rb = froc_curve(pred, gt, ids), froc_curve(worse, gt, ids)
    c = compare_bootstrap(ra, rb, 400, seed=3)
    assert c.observed_delta == pytest.approx(ra.aufroc() - rb.aufroc())
    np.testing.assert_allclose(c.delta, c.a.aufroc - c.b.aufroc)
    assert c.observed_delta > 0
    assert c.p_value == pytest.approx(np.mean(c.delta <= 0))
    # paired on the same resamples: identical methods give Δ = 0 everywhere and p = 1
    same = compare_bootstrap(ra, ra, 100, seed=3)
    assert np.all(same.delta == 0) and same.p_value == 1.0
    # a reordered image list pairs by image id, not by position
    rb2 = froc_curve(worse, gt, ids[::-1])
    c2 = compare_bootstrap(ra, rb2, 400, seed=3)
    np.testing.assert_allclose(c2.delta, c.delta)
