"""The lean detection path (issue 10): decoding, threshold, NMS and mask where the network's
outputs live, only the survivors copied to the host. Built for a GPU and run here on the CPU with
the same code; its detections must equal the cached host path's (``from_raw(raw(...))``, a
second implementation with the numpy NMS) and a brute-force greedy NMS written in the test."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_gravity.core import GravityConfig, GravityNet, Predictor


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(5)
    cfg = GravityConfig(
        backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=7, normalization="local"
    )
    model = GravityNet(cfg).eval()
    with torch.no_grad():  # spread the scores over (0, 1) and move the points by a few pixels
        model.cls_head[-1].weight.mul_(30)
        model.reg_head[-1].weight.normal_(0, 0.05)
    return model


def _pair(model):
    lean = Predictor(copy.deepcopy(model), device="cpu", postprocess="device")
    host = Predictor(copy.deepcopy(model), device="cpu", postprocess="host")
    return lean, host


def _images():
    rng = np.random.default_rng(0)
    big = rng.normal(100, 10, (320, 256)).astype(np.float32)
    big[100:200, 60:160] += 40
    small = rng.normal(500, 30, (136, 200)).astype(np.float32)
    mask = np.zeros(big.shape, bool)
    mask[90:230, 40:150] = True
    return big, small, mask


def _same(a, b):
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert (a.threshold, a.tta) == (b.threshold, b.tta)  # both record the γ and mode used


@pytest.mark.parametrize("threshold", [0.0, 0.0005, 0.2, 0.6, 0.95])
@pytest.mark.parametrize("box,iou", [(7, 0.5), (15, 0.2), (3, 0.5)])
def test_device_postprocess_equals_the_cached_host_path(net, threshold, box, iou):
    lean, host = _pair(net)
    big, small, mask = _images()
    got = lean.detect_batch(
        [big, small, big], [mask, None, None], threshold=threshold, nms_box=box, nms_iou=iou
    )
    want = [
        host.detect(big, mask, threshold=threshold, nms_box=box, nms_iou=iou),
        host.detect(small, None, threshold=threshold, nms_box=box, nms_iou=iou),
        host.detect(big, None, threshold=threshold, nms_box=box, nms_iou=iou),
    ]
    for g, w in zip(got, want, strict=True):
        _same(g, w)
        assert g.threshold == threshold and g.tta == "off"
    assert len(want[2]) > len(want[0]) > 0 or threshold >= 0.95
    # one image at a time through detect(): the same
    _same(lean.detect(big, mask, threshold=threshold, nms_box=box, nms_iou=iou), want[0])
    assert not lean._cache  # the lean path keeps nothing on the host
    lean.raw(small)  # once raw() has cached an image, detect() re-uses it: same result
    _same(lean.detect(small, threshold=threshold, nms_box=box, nms_iou=iou), want[1])


def _brute_force(points, scores, threshold, box, iou, shape):
    """Greedy NMS by hand: best first, drop every later box whose IoU with a kept one > iou."""
    h, w = shape
    ok = (scores >= threshold) & (points[:, 0] >= -0.5) & (points[:, 0] < h - 0.5)
    ok &= (points[:, 1] >= -0.5) & (points[:, 1] < w - 0.5)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    kept: list[int] = []
    for i in idx:
        good = True
        for j in kept:
            dy, dx = box - abs(points[i] - points[j])
            inter = max(dy, 0) * max(dx, 0)
            if inter / (2 * box * box - inter) > iou:
                good = False
                break
        if good:
            kept.append(i)
    return points[kept], scores[kept]


def test_device_postprocess_matches_a_brute_force_nms(net):
    lean, _ = _pair(net)
    _, small, _ = _images()
    det = lean.detect(small, threshold=0.5, nms_box=7, nms_iou=0.5)
    raw = Predictor(copy.deepcopy(net), device="cpu", postprocess="host").raw(small)
    pts, sc = _brute_force(raw.points, raw.scores, 0.5, 7.0, 0.5, small.shape)
    assert len(det) == len(sc) > 3
    np.testing.assert_array_equal(det.scores, sc.astype(np.float64))
    np.testing.assert_array_equal(det.points, pts.astype(np.float64))


def test_device_postprocess_edge_cases(net):
    lean, _ = _pair(net)
    big, _, mask = _images()
    assert len(lean.detect(big, np.zeros_like(mask), threshold=0.0)) == 0  # empty mask
    with pytest.raises(ValueError, match="does not match image shape"):
        lean.detect_batch([big], [mask[:10]])
    with pytest.raises(ValueError, match="2 masks"):
        lean.detect_batch([big], [mask, mask])
    with pytest.raises(ValueError, match="postprocess"):
        Predictor(copy.deepcopy(net), device="cpu", postprocess="gpu")
    auto = Predictor(copy.deepcopy(net), device="cpu")
    assert auto.postprocess_on_device is True  # "auto": the lean path on the CPU too
