import numpy as np
import pytest
import torch

from napari_gravity.core import GravityConfig, GravityNet, Predictor, nms_points
from napari_gravity.types import Detections


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = GravityConfig(
        backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5, threshold=0.5
    )
    model = GravityNet(cfg)
    # make scores spread out so thresholds matter
    with torch.no_grad():
        model.cls_head[-1].bias.fill_(0.0)
        model.cls_head[-1].weight.mul_(20)
        model.reg_head[-1].weight.normal_(0, 0.05)
    return Predictor(model, cfg, device="cpu")


def image(seed=0, shape=(70, 90)):
    return np.random.default_rng(seed).uniform(0, 1000, shape).astype(np.float32)


def test_raw_runs_network_once_and_caches(predictor):
    calls = []
    h = predictor.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        img = image(1)
        raw = predictor.raw(img)
        assert predictor.raw(img.copy()) is raw  # same content, same cache entry
        for thr in (0.1, 0.5, 0.9):
            predictor.detect(img, threshold=thr)
        predictor.detect(img, nms_box=9, nms_iou=0.3)
        assert len(calls) == 1
        predictor.raw(image(2))
        assert len(calls) == 2
    finally:
        h.remove()
    n = len(predictor.model.points_for(img.shape))
    assert raw.points.shape == (n, 2) and raw.scores.shape == (n,)
    assert raw.gravity_points.shape == (n, 2) and raw.moved_points is raw.points


def test_detect_equals_postprocess_of_all_candidates(predictor):
    img = image(3)
    raw = predictor.raw(img)
    inside = (raw.points[:, 0] >= -0.5) & (raw.points[:, 0] < img.shape[0] - 0.5)
    inside &= (raw.points[:, 1] >= -0.5) & (raw.points[:, 1] < img.shape[1] - 0.5)
    idx = np.flatnonzero(inside)
    ref = idx[nms_points(raw.points[idx], raw.scores[idx], 5, 0.5)]
    # thresholds up, down and across the floor: always "NMS over all, then threshold"
    for thr in (0.5, 0.8, 0.3, 0.002, 0.9, 0.0, 1e-4, 0.4):
        det = predictor.detect(img, threshold=thr)
        assert isinstance(det, Detections)
        want = ref[raw.scores[ref] >= thr]
        np.testing.assert_allclose(det.points, raw.points[want])
        np.testing.assert_allclose(det.scores, raw.scores[want])
    # default threshold comes from the config
    assert len(predictor.detect(img)) == int((raw.scores[ref] >= 0.5).sum())
    assert np.all(np.diff(predictor.detect(img, threshold=0.1).scores) <= 0)


def test_mask(predictor):
    img = image(4)
    mask = np.zeros(img.shape, dtype=bool)
    mask[:, : img.shape[1] // 2] = True
    det = predictor.detect(img, mask=mask, threshold=0.1)
    full = predictor.detect(img, threshold=0.1)
    assert len(det) < len(full)
    assert np.all(np.rint(det.points[:, 1]) < img.shape[1] // 2)
    with pytest.raises(ValueError, match="mask shape"):
        predictor.detect(img, mask=np.ones((3, 3), dtype=bool))

    # a mask attached to the raw output applies to every later γ / NMS change
    raw = predictor.raw(img)
    raw.mask = mask
    try:
        attached = predictor.from_raw(raw, threshold=0.1)
        np.testing.assert_array_equal(attached.points, det.points)
    finally:
        raw.mask = None
    assert len(predictor.from_raw(raw, threshold=0.1)) == len(full)


def test_protocol_and_errors(predictor):
    assert isinstance(predictor.name, str) and "GravityNet" in predictor.name
    with pytest.raises(ValueError, match="2-D"):
        predictor.raw(np.zeros((2, 8, 8)))


def test_device_nms_seeds_the_same_cache(predictor):
    img = image(5)
    want = [predictor.detect(img, threshold=t) for t in (0.5, 0.2, 0.9)]
    predictor.clear_cache()
    predictor.device_nms = True  # the CUDA path, run here with CPU tensors
    try:
        raw = predictor.raw(img)
        assert len(raw._nms_cache) == 1
        got = [predictor.detect(img, threshold=t) for t in (0.5, 0.2, 0.9)]
    finally:
        predictor.device_nms = False
        predictor.clear_cache()
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_raw_batch_equals_raw(predictor):
    imgs = [image(10), image(11), image(12, shape=(40, 48)), image(10)]
    predictor.clear_cache()
    singles = [predictor.raw(im) for im in imgs]
    predictor.clear_cache()
    calls = []
    h = predictor.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        batch = predictor.raw_batch(imgs)
    finally:
        h.remove()
    assert len(calls) == 2  # one pass per shape
    assert batch[0] is batch[3]  # same content: one result
    for a, b in zip(singles, batch, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.points, b.points, rtol=1e-4, atol=1e-4)
