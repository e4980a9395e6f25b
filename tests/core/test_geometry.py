"""One pixel rule for points: geometry, prediction, evaluation and the detectors agree.

Expected values come from the SPEC's convention (pixel (r, c) covers [r-0.5, r+0.5)) computed by
hand or by a brute-force second method (which pixel squares contain the point), never from the
code under test.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from napari_gravity.core import geometry
from napari_gravity.core.geometry import (
    inside_image,
    inside_mask,
    near_points,
    pixel_index,
    suppress_close,
)
from napari_gravity.detectors import base as det_base
from napari_gravity.evaluation.froc import IGNORED, match_image

# the module (``napari_gravity.core.postprocess`` as an attribute is the function of that name)
postprocess = importlib.import_module("napari_gravity.core.postprocess")


def _brute_inside_mask(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Second method: scan every pixel square [r-0.5, r+0.5) x [c-0.5, c+0.5) of the mask."""
    out = np.zeros(len(points), dtype=bool)
    for k, (y, x) in enumerate(points):
        for r in range(mask.shape[0]):
            if not (r - 0.5 <= y < r + 0.5):
                continue
            for c in range(mask.shape[1]):
                if c - 0.5 <= x < c + 0.5:
                    out[k] = mask[r, c]
    return out


def _evaluation_inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What evaluation does with a mask: predictions outside it are labelled ignored."""
    m = match_image(points, np.linspace(1, 0.5, len(points)), np.zeros((0, 2)), mask=mask)
    return m.labels != IGNORED


def _detector_inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return det_base.keep_in_mask(points, mask)


def _prediction_inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return postprocess.inside_mask(points, mask)


CONSUMERS = {
    "geometry": inside_mask,
    "prediction": _prediction_inside,
    "evaluation": _evaluation_inside,
    "detectors": _detector_inside,
}


def test_half_pixel_points_follow_the_spec():
    # [r-0.5, r+0.5): 0.5 is on pixel 1, -0.5 on pixel 0, 2.5 on pixel 3 (np.rint says 0 and 2)
    pts = np.array([[0.5, 0.0], [-0.5, 2.5], [1.4999, -0.5]])
    assert pixel_index(pts).tolist() == [[1, 0], [0, 3], [1, 0]]
    # just below 0.5 is still pixel 0 (the literal floor(p + 0.5) rounds 0.5 - 2**-54 + 0.5 to 1)
    assert pixel_index([[np.nextafter(0.5, 0), np.nextafter(-0.5, -1)]]).tolist() == [[0, -1]]
    # the same in float32, and small negatives (where p - floor(p) rounds) on both sides of -0.5
    f32 = np.float32
    edge = [
        [np.nextafter(f32(0.5), f32(0)), np.nextafter(f32(-0.5), f32(-1))],
        [np.nextafter(f32(-0.5), f32(0)), f32(-1e-30)],
        [f32(-0.5), f32(2.5)],
    ]
    assert pixel_index(np.array(edge, dtype=f32)).tolist() == [[0, -1], [0, 0], [0, 3]]
    mask = np.zeros((4, 4), bool)
    mask[1, 0] = True  # only pixel (1, 0) is tissue
    for name, fn in CONSUMERS.items():
        assert fn(pts, mask).tolist() == [True, False, True], name


def test_image_border_is_half_open():
    h, w = 5, 7
    pts = np.array([[-0.5, 0], [h - 0.5, 0], [np.nextafter(h - 0.5, 0), 0], [0, w - 0.5]])
    assert inside_image(pts, (h, w)).tolist() == [True, False, True, False]
    full = np.ones((h, w), bool)
    for name, fn in CONSUMERS.items():
        assert fn(pts, full).tolist() == [True, False, True, False], name


def test_points_outside_the_image_are_outside_not_clipped():
    mask = np.ones((6, 6), bool)
    pts = np.array([[-3.0, 2.0], [2.0, 40.0], [np.inf, 1.0], [-np.inf, -np.inf], [2.0, 2.0]])
    for name, fn in CONSUMERS.items():
        assert fn(pts, mask).tolist() == [False, False, False, False, True], name


def test_empty_inputs():
    mask = np.ones((3, 3), bool)
    for empty in ([], np.zeros((0, 2)), np.zeros((0, 2), np.float32)):
        assert inside_mask(empty, mask).shape == (0,)
        assert inside_image(empty, (3, 3)).shape == (0,)
        assert pixel_index(empty).shape == (0, 2)
        assert suppress_close(empty, [], 3.0).shape == (0,)
        assert near_points(empty, [[1, 1]], 3.0).shape == (0,)
    assert near_points([[1, 1]], [], 3.0).tolist() == [False]
    assert inside_mask([[1.0, 1.0]], None).tolist() == [True]


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: inside_mask(p, np.ones((4, 4), bool)),
        lambda p: inside_image(p, (4, 4)),
        pixel_index,
        lambda p: suppress_close(p, np.ones(len(p)), 2.0),
        lambda p: near_points(p, [[0.0, 0.0]], 2.0),
        lambda p: postprocess.inside_mask(p, np.ones((4, 4), bool)),
        lambda p: det_base.keep_in_mask(p, np.ones((4, 4), bool)),
    ],
)
def test_nan_points_are_rejected(fn):
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([[1.0, 1.0], [np.nan, 2.0]]))


def test_nan_prediction_in_evaluation_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        match_image([[np.nan, 1.0]], [0.5], [[1.0, 1.0]], [1.0], mask=np.ones((3, 3), bool))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        inside_image(np.zeros((3, 3)), (4, 4))
    with pytest.raises(ValueError, match="2-D"):
        inside_mask([[0.0, 0.0]], np.ones((2, 2, 2), bool))


def test_property_all_consumers_agree_with_the_brute_force_rule():
    rng = np.random.default_rng(12)
    for _ in range(60):
        h, w = rng.integers(1, 9, size=2)
        mask = rng.random((h, w)) < 0.5
        n = int(rng.integers(0, 40))
        # a mix of half-pixel points, integer points, near-boundary floats and far-outside points
        kind = rng.integers(0, 4, size=(n, 2))
        base = rng.integers(-2, max(h, w) + 2, size=(n, 2)).astype(np.float64)
        pts = np.where(kind == 0, base + 0.5, base)
        pts = np.where(kind == 1, base + rng.uniform(-1, 1, size=(n, 2)), pts)
        pts = np.where(kind == 2, np.nextafter(base + 0.5, -np.inf), pts)
        expected = _brute_inside_mask(pts, mask)
        for name, fn in CONSUMERS.items():
            np.testing.assert_array_equal(fn(pts, mask), expected, err_msg=name)
        for dtype in (np.float32,):
            p32 = pts.astype(dtype)
            np.testing.assert_array_equal(
                inside_mask(p32, mask), _brute_inside_mask(p32.astype(np.float64), mask)
            )
        in_img = inside_image(pts, (h, w))
        np.testing.assert_array_equal(in_img, _brute_inside_mask(pts, np.ones((h, w), bool)))


def test_suppress_close_greedy_by_score_strict_radius():
    # A(best) at 0, B at 2.999 (< 3 from A: dropped), C at 3.0 from A (not < 3: kept),
    # D at 1 from C but C outranks D -> D dropped.
    pts = np.array([[0.0, 0.0], [0.0, 2.999], [3.0, 0.0], [4.0, 0.0]])
    sc = np.array([0.9, 0.8, 0.7, 0.6])
    assert suppress_close(pts, sc, 3.0).tolist() == [0, 2]
    # ties: the earlier index wins
    assert suppress_close([[0, 0], [0, 1]], [0.5, 0.5], 2.0).tolist() == [0]
    # radius 0 keeps all, best first
    assert suppress_close(pts, sc[::-1], 0).tolist() == [3, 2, 1, 0]


def test_suppress_close_property_against_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(0, 30))
        pts = rng.integers(0, 12, size=(n, 2)) + rng.choice([0.0, 0.5], size=(n, 2))
        sc = rng.integers(0, 5, size=n).astype(float)
        r = float(rng.choice([1.0, 1.5, 2.5, 3.0]))
        # brute force: walk in score order (stable), keep if no kept point is closer than r
        kept: list[int] = []
        for i in sorted(range(n), key=lambda k: (-sc[k], k)):
            if all(np.hypot(*(pts[i] - pts[j])) >= r for j in kept):
                kept.append(i)
        assert suppress_close(pts, sc, r).tolist() == kept
        # the detectors' helper is the same function
        assert det_base.suppress_close(pts, sc, r).tolist() == kept


def test_near_points():
    kept = np.array([[10.0, 10.0]])
    new = np.array([[10.0, 12.0], [10.0, 13.0], [10.0, 12.9999], [0.0, 0.0]])
    assert near_points(new, kept, 3.0).tolist() == [True, False, True, False]
    assert near_points(new, kept, 0.0).tolist() == [False] * 4


def test_postprocess_reexports_geometry():
    assert postprocess.inside_mask is geometry.inside_mask
    assert postprocess.inside_image is geometry.inside_image
