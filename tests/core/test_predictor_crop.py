"""The CPU path of the Predictor: the network runs on the tissue mask's crop only, reports its
progress and can be cancelled. References come from a plain forward pass of an untouched copy of
the network on the whole image (a second method), and from hand-computed boxes and radii."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from napari_gravity.core import GravityConfig, GravityNet, Predictor
from napari_gravity.core.predictor import crop_box

SHAPE = (400, 304)


@pytest.fixture(scope="module")
def net(paper_net):
    """The shared paper-heads network (tests/core/conftest.py): a crop must reproduce it."""
    return paper_net


def _image(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 50, SHAPE).astype(np.float32)
    img[150:260, 100:200] += rng.uniform(100, 1000, (110, 100)).astype(np.float32)
    img[5, 5] = 5000.0  # outside the crop: a min-max over the crop alone would differ
    return img


def _reference(model, img):
    """Scores and moved points of the whole image by a plain fp32 forward pass."""
    ref = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x = (img - img.min()) / (img.max() - img.min())
    with torch.no_grad():
        logits, offsets = ref(torch.from_numpy(x)[None, None])
    gp = ref.points_for(img.shape).numpy()
    return torch.sigmoid(logits[0]).numpy(), gp + ref.config.d_h * offsets[0].numpy(), gp


def test_crop_box_by_hand():
    mask = np.zeros(SHAPE, bool)
    mask[200:251, 150:161] = True
    # rows 200-250 grown by 96: 104 (on the 8-grid) to 347; cols 150-160: 54 -> 48 to 257
    assert crop_box(mask, SHAPE, 8, 96) == (104, 347, 48, 257)
    assert crop_box(np.zeros(SHAPE, bool), SHAPE, 8, 96) == (0, 0, 0, 0)
    mask[:, :] = True
    assert crop_box(mask, SHAPE, 8, 96) is None  # saves nothing: the whole image
    assert crop_box(None, SHAPE, 8, 96) is None
    with pytest.raises(ValueError, match="mask shape"):
        crop_box(np.ones((3, 3), bool), SHAPE, 8, 96)


def test_receptive_radius_by_hand_and_by_perturbation(net):
    # conv1 7x7/2: 3; maxpool 3x3/2: +1*2; layer1 4 convs: +4*4; layer2: +1*4 +3*8; heads 5: +5*8
    assert net.receptive_radius() == 3 + 2 + 16 + 4 + 24 + 40 == 89
    deep = GravityNet(GravityConfig(backbone="resnet34", step=4, stride=8))
    assert deep.receptive_radius() == 3 + 2 + 6 * 4 + 4 + 7 * 8 + 5 * 8
    # one changed pixel changes no output further than the radius away
    x = torch.zeros(1, 1, 256, 256)
    y = x.clone()
    y[0, 0, 128, 128] = 1.0
    with torch.no_grad():
        a, _ = net.head_maps(net.features(x))
        b, _ = net.head_maps(net.features(y))
    changed = (a - b).abs().amax(dim=1)[0] > 0
    rows, cols = np.nonzero(changed.numpy())
    assert len(rows)
    cell_centre = 8 * rows + 3.5, 8 * cols + 3.5
    dist = np.maximum(np.abs(cell_centre[0] - 128), np.abs(cell_centre[1] - 128))
    assert dist.max() <= 89 + 4  # within the radius (cells are 8 px wide)


def test_masked_raw_equals_the_whole_image_forward_inside_the_mask(net):
    img = _image()
    mask = np.zeros(SHAPE, bool)
    mask[150:260, 100:200] = True
    pred = Predictor(net, device="cpu", amp=False)
    box = crop_box(mask, SHAPE, 8, pred.crop_margin)
    assert box is not None and box != (0, 0, 0, 0)  # the test exercises a real crop
    raw = pred.raw(img, mask)
    scores, points, gp = _reference(net, img)
    gy, gx = np.rint(gp[:, 0]).astype(int), np.rint(gp[:, 1]).astype(int)
    inside = mask[np.clip(gy, 0, SHAPE[0] - 1), np.clip(gx, 0, SHAPE[1] - 1)]
    inside &= (gy < SHAPE[0]) & (gx < SHAPE[1])
    assert inside.sum() > 100
    np.testing.assert_allclose(raw.scores[inside], scores[inside], atol=1e-4)
    np.testing.assert_allclose(raw.points[inside], points[inside], atol=1e-3)
    np.testing.assert_allclose(raw.gravity_points, gp)
    y0, y1, x0, x1 = box
    outside = (gp[:, 0] < y0) | (gp[:, 0] >= y1 + 8) | (gp[:, 1] < x0) | (gp[:, 1] >= x1 + 8)
    assert outside.sum() > 100 and np.all(raw.scores[outside] == 0)
    # detections inside the mask: those of the whole image filtered by the mask
    det = pred.detect(img, mask=mask, threshold=0.3)
    full = Predictor(net, device="cpu", amp=False).detect(img, threshold=0.3)
    ok = mask[np.rint(full.points[:, 0]).astype(int), np.rint(full.points[:, 1]).astype(int)]
    assert len(det) > 0
    np.testing.assert_allclose(det.points, full.points[ok], atol=1e-3)


def test_empty_mask_runs_nothing_and_finds_nothing(net):
    pred = Predictor(net, device="cpu", amp=False)
    calls = []
    h = net.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        det = pred.detect(_image(1), mask=np.zeros(SHAPE, bool), threshold=0.0)
    finally:
        h.remove()
    assert calls == [] and len(det) == 0


def test_progress_rises_to_one_and_a_raise_cancels_without_caching(net):
    pred = Predictor(net, device="cpu", amp=False)
    seen: list[float] = []
    pred.raw(_image(2), progress=seen.append)
    assert len(seen) > 10 and seen[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(seen))
    assert 0.3 < seen[len(seen) // 2] < 1.0  # the middle of the pass is neither start nor end

    class Cancelled(Exception):
        pass

    def cancel(f):
        if f > 0.3:
            raise Cancelled

    img = _image(3)
    with pytest.raises(Cancelled):
        pred.raw(img, progress=cancel)
    assert all(not m._forward_hooks for m in net.modules())  # the progress hooks are gone
    calls = []
    h = net.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        pred.raw(img)  # not cached by the cancelled run: the network runs
    finally:
        h.remove()
    assert calls == [1]


def test_image_key_sees_every_byte_shape_and_dtype():
    from napari_gravity.core.predictor import image_key

    a = np.random.default_rng(0).uniform(0, 1, (1500, 1600)).astype(np.float32)  # > 8 MB
    k = image_key(a)
    assert image_key(a.copy()) == k
    for idx in [(0, 0), (400, 5), (800, 1599), (1499, 1599)]:  # one pixel in each slice
        b = a.copy()
        b[idx] += 1.0
        assert image_key(b) != k
    assert image_key(a.reshape(1600, 1500)) != k
    assert image_key(a.astype(np.float64)) != image_key(a)
    small = a[:10, :10]
    assert image_key(small) == image_key(small.copy()) != image_key(small.T)


def test_interactive_floor_by_hand_and_exact_below_it(net):
    from napari_gravity.core.predictor import interactive_floor

    assert interactive_floor(0.78) == 0.1  # capped
    assert interactive_floor(0.2) == pytest.approx(0.05)
    assert interactive_floor(0.0) == 1e-3
    img = _image(4)
    low = Predictor(net, device="cpu", amp=False)
    gui = Predictor(net, device="cpu", amp=False, floor=interactive_floor(0.5))
    for thr in (0.6, 0.2, 0.05):  # above and below the GUI's floor of 0.125
        a = low.detect(img, threshold=thr)
        b = gui.detect(img, threshold=thr)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert len(low.detect(img, threshold=0.05)) > len(low.detect(img, threshold=0.2)) > 0


def test_channels_last_is_a_choice_and_none_leaves_the_model_alone():
    def layout(m):
        w = m.backbone.layer1[0].conv1.weight  # 64 input channels: the layouts differ
        return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()

    cfg = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32)
    model = GravityNet(cfg)
    Predictor(model, device="cpu", channels_last=None)
    assert not layout(model)  # a trainer's live model keeps its layout
    Predictor(model, device="cpu")
    assert layout(model)
