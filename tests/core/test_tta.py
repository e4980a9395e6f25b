"""Test-time augmentation: view geometry, the symmetric lattice size, the per-point average (by
hand), the dihedral equivariance it buys (an invariant a single pass lacks), and which mode and
γ a Predictor uses."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.core import Predictor
from napari_gravity.core.gravity_points import gravity_points
from napari_gravity.core.tta import (
    chest_wall_view,
    fuse_views,
    symmetric_size,
    unview_points,
    view,
    views,
)

SHAPE = (77, 117)  # both ≡ 5 (mod 8): already symmetric for stride 8, step 4


@pytest.fixture(scope="module")
def net(paper_net):
    """The shared random paper-heads model (``conftest.paper_net``)."""
    return paper_net


def _image(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 50, shape).astype(np.float32)
    img[20:30, 60:75] += 400.0  # an asymmetric bright patch
    return img


@pytest.mark.parametrize("k", range(8))
def test_unview_points_inverts_view_on_a_marked_pixel(k):
    a = np.zeros((5, 7))
    a[1, 5] = 1.0
    v = view(a, k)
    q = np.argwhere(v == 1.0).astype(float)  # where the marker went, found independently
    assert unview_points(q, k, a.shape).tolist() == [[1.0, 5.0]]


def test_modes_and_their_views():
    assert (
        views("off") == (0,) and len(views("flips")) == 4 and sorted(views("d8")) == list(range(8))
    )
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        views("rot90")


@pytest.mark.parametrize(
    ("step", "stride", "layout"), [(4, 8, "paper"), (10, 32, "paper"), (10, 32, "uniform")]
)
def test_symmetric_size_is_the_smallest_mirror_symmetric_size(step, stride, layout):
    def symmetric(n):
        # every gravity point, those in the stride padding beyond the image included
        ys = {float(y) for y in gravity_points((n, 1), step, stride=stride, layout=layout)[:, 0]}
        return ys == {n - 1 - y for y in ys}

    for n in range(1, 3 * stride):
        s = symmetric_size(n, step, stride, layout)
        assert s >= n and symmetric(s)
        assert not any(symmetric(m) for m in range(n, s))


def test_fuse_views_by_hand():
    # a 1×5 image, lattice x = 0 and 4; view 0 (identity) and view 1 (columns flipped)
    gp = np.array([[0.0, 0.0], [0.0, 4.0]])
    v0 = (0, gp, np.array([[0.0, 1.0], [0.0, 3.0]]), np.array([0.2, 0.6]))
    # view 1's point at x=0 is the image's x=4 and vice versa; its moved x 1.5 / 2 are 2.5 / 2
    v1 = (1, gp, np.array([[0.0, 1.5], [0.0, 2.0]]), np.array([0.4, 0.0]))
    pts, sc = fuse_views(gp, [v0, v1], (1, 5))
    assert sc == pytest.approx([0.1, 0.5])
    # score-weighted positions: x = (0.2·1 + 0·2) / 0.2 and (0.6·3 + 0.4·2.5) / 1.0
    assert pts[:, 1] == pytest.approx([1.0, 2.8])
    with pytest.raises(ValueError, match="miss the image's lattice"):
        fuse_views(gp, [(0, gp + 1.0, gp, np.zeros(2))], (1, 5))


def _by_point(raw):
    """{gravity point: (score, moved point)} of a raw output."""
    return {
        tuple(int(v) for v in g): (float(s), p)
        for g, s, p in zip(raw.gravity_points, raw.scores, raw.points, strict=True)
    }


def _equivariance_error(pred, img, k):
    """Largest score difference between the output on view k of the image (mapped back) and
    the output on the image itself, over the gravity points inside the image."""
    a = _by_point(pred.raw(img))
    vb = pred.raw(view(img, k))
    g_back = unview_points(vb.gravity_points, k, img.shape)
    worst = 0.0
    for g, s in zip(g_back, vb.scores, strict=True):
        key = tuple(int(np.rint(v)) for v in g)
        if 0 <= key[0] < img.shape[0] and 0 <= key[1] < img.shape[1]:
            worst = max(worst, abs(a[key][0] - float(s)))
    return worst


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7])
def test_d8_output_is_equivariant_and_one_pass_is_not(net, k):
    img = _image()
    d8 = Predictor(net, device="cpu", tta="d8", cache_size=0)
    one = Predictor(net, device="cpu", cache_size=0)
    assert _equivariance_error(d8, img, k) < 1e-5
    assert _equivariance_error(one, img, k) > 1e-3  # the network itself is not equivariant


def test_d8_moved_points_follow_the_flip(net):
    img = _image(1)
    pred = Predictor(net, device="cpu", tta="d8", cache_size=0)
    a = _by_point(pred.raw(img))
    b = pred.raw(view(img, 1))
    back = unview_points(b.points, 1, img.shape)
    for g, p in zip(unview_points(b.gravity_points, 1, img.shape), back, strict=True):
        key = tuple(int(np.rint(v)) for v in g)
        if key in a and a[key][0] > 0.05:
            assert np.abs(a[key][1] - p).max() < 1e-3


def test_any_image_size_gives_one_candidate_per_gravity_point_inside(net):
    img = _image(2, shape=(50, 61))  # not symmetric: padded for the views
    pred = Predictor(net, device="cpu", tta="d8")
    raw = pred.raw(img)
    assert raw.image_shape == (50, 61) and raw.tta == "d8"
    gp = raw.gravity_points
    inside = (gp[:, 0] <= 49) & (gp[:, 1] <= 60)
    # every lattice point of the image is there once (the padding's are dropped by select)
    want = {
        tuple(p)
        for p in gravity_points((50, 61), 4, stride=8).astype(int)
        if p[0] <= 49 and p[1] <= 60
    }
    assert {tuple(int(v) for v in p) for p in gp[inside]} == want
    assert np.isfinite(raw.scores).all() and ((raw.scores >= 0) & (raw.scores <= 1)).all()


def test_auto_mode_needs_a_calibration_and_a_small_network_input(net):
    cal = {"d8": {"threshold": 0.9, "nms_box": 3.0, "nms_iou": 0.5}}
    pred = Predictor(net, device="cpu", tta="auto", tta_params=cal, tta_max_pixels=77 * 117)
    assert pred.tta_mode((77, 117)) == "d8"
    assert pred.tta_mode((78, 117)) == "off"
    big = np.zeros((400, 400), bool)
    big[300:310, 300:310] = True  # a small mask: the crop decides, not the image
    pred.tta_max_pixels = 400 * 400 - 1
    assert pred.tta_mode((400, 400)) == "off"
    assert pred.tta_mode((400, 400), big) == "d8"
    assert Predictor(net, device="cpu", tta="auto").tta_mode((77, 117)) == "off"  # uncalibrated
    with pytest.raises(ValueError, match="tta must be one of"):
        Predictor(net, device="cpu", tta="rot")


def test_auto_mode_on_whole_images_uses_tta_whole_where_calibrated(net):
    """Above ``tta_max_pixels`` "auto" gives ``tta_whole`` (one pass by default), only where the
    model is calibrated for that mode; its output is that mode's own."""
    img = _image(5)
    d8 = {"threshold": 0.9, "nms_box": 3.0, "nms_iou": 0.5}
    flips = {"threshold": 0.8, "nms_box": 3.0, "nms_iou": 0.5}
    small = img.shape[0] * img.shape[1] - 1  # this image counts as a whole one
    kw = {"device": "cpu", "tta": "auto", "tta_max_pixels": small}
    assert Predictor(net, tta_params={"d8": d8, "flips": flips}, **kw).tta_mode(img.shape) == "off"
    pred = Predictor(net, tta_params={"d8": d8, "flips": flips}, tta_whole="flips", **kw)
    assert pred.tta_mode(img.shape) == "flips"
    raw = pred.raw(img)
    ref = Predictor(net, device="cpu", tta="flips").raw(img)
    assert raw.tta == "flips"
    np.testing.assert_array_equal(raw.scores, ref.scores)
    assert pred.detect(img).threshold == pytest.approx(0.8)  # the flips' calibrated γ
    uncalibrated = Predictor(net, tta_params={"d8": d8}, tta_whole="flips", **kw)
    assert uncalibrated.tta_mode(img.shape) == "off"
    with pytest.raises(ValueError, match="tta_whole must be one of"):
        Predictor(net, device="cpu", tta_whole="auto")


def test_detect_uses_the_mode_calibration(net):
    img = _image(3)
    thr = float(np.quantile(Predictor(net, device="cpu", tta="d8").raw(img).scores, 0.99))
    cal = {"d8": {"threshold": thr, "nms_box": 3.0, "nms_iou": 0.5}}
    pred = Predictor(net, device="cpu", tta="d8", tta_params=cal)
    assert pred.params_for("d8") == cal["d8"]
    assert pred.params_for("off")["threshold"] == pytest.approx(net.config.threshold)
    det = pred.detect(img)
    ref = pred.from_raw(pred.raw(img), threshold=thr, nms_box=3.0, nms_iou=0.5)
    assert len(det.scores) and (det.scores >= thr).all()
    np.testing.assert_array_equal(det.points, ref.points)
    [batch] = pred.detect_batch([img])
    np.testing.assert_array_equal(batch.points, det.points)


def _breast(shape=(96, 120)):
    """A half-disc of tissue against the left border (the chest wall), with texture."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = ((yy - shape[0] / 2) / (0.45 * shape[0])) ** 2 + (xx / (0.8 * shape[1])) ** 2 < 1
    img = np.random.default_rng(3).uniform(0, 40, shape).astype(np.float32)
    img[mask] += 300.0
    img[40:44, 30:33] += 500.0  # a bright spot inside
    return img, mask


def test_chest_wall_view_turns_the_side_the_breast_meets_to_the_left():
    _, mask = _breast()
    assert chest_wall_view(mask) == 0
    for k in range(8):
        v = view(mask, k)
        turned = view(v, chest_wall_view(v))
        assert turned[:, 0].mean() > 0.5 and chest_wall_view(turned) == 0
    assert chest_wall_view(np.ones((50, 60), bool)) == 0  # a tile inside the breast: no side
    assert chest_wall_view(np.zeros((50, 60), bool)) == 0
    assert chest_wall_view(None) == 0


def test_one_pass_on_a_right_breast_or_a_landscape_frame_runs_with_the_chest_wall_left(net):
    """``orient``: a mirrored image, and one turned by 90°, are run on the view that brings the
    chest wall back to the left, so their detections are exactly the upright image's, mapped."""
    img, mask = _breast()
    w = img.shape[1]
    pred = Predictor(net, device="cpu", orient=True, floor=0.0)
    ref = pred.detect(img, mask, threshold=0.0)
    assert len(ref.points) > 10
    right = pred.detect(img[:, ::-1].copy(), mask[:, ::-1].copy(), threshold=0.0)
    np.testing.assert_allclose(
        np.sort(right.points[:, 1]), np.sort(w - 1 - ref.points[:, 1]), atol=1e-4
    )
    np.testing.assert_allclose(np.sort(right.scores), np.sort(ref.scores), atol=1e-6)
    land = pred.raw(np.rot90(img).copy(), np.rot90(mask).copy())  # chest wall at the bottom
    assert land.image_shape == (w, img.shape[0])
    back = unview_points(land.points, 6, img.shape)  # rot90 is view 6 of the upright image
    upright = pred.raw(img, mask)
    np.testing.assert_allclose(np.sort(back[:, 0]), np.sort(upright.points[:, 0]), atol=1e-4)
    np.testing.assert_allclose(np.sort(land.scores), np.sort(upright.scores), atol=1e-6)
    # the 4 flips hold no 90° turn: a landscape frame is turned back before them too
    flips = Predictor(net, device="cpu", orient=True, tta="flips", floor=0.0)
    land_f = flips.raw(np.rot90(img).copy(), np.rot90(mask).copy())
    up_f = flips.raw(img, mask)
    assert land_f.tta == up_f.tta == "flips"
    back_f = unview_points(land_f.points, 6, img.shape)
    np.testing.assert_allclose(np.sort(back_f[:, 1]), np.sort(up_f.points[:, 1]), atol=1e-4)
    np.testing.assert_allclose(np.sort(land_f.scores), np.sort(up_f.scores), atol=1e-6)
    # without ``orient`` the mirrored image is its own forward pass (the network is not
    # mirror-equivariant), so the scores differ
    plain = Predictor(net, device="cpu", floor=0.0).raw(img[:, ::-1].copy(), mask[:, ::-1].copy())
    assert not np.allclose(np.sort(plain.scores), np.sort(upright.scores), atol=1e-6)
