"""Decoding and scores pinned independently of the network: a fake model returns known logits and
offsets, and the Predictor must report ``gravity point + d_h · offset`` with ``sigmoid(logit)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_gravity.core import GravityConfig, Predictor, gravity_points

D_H = 7.0  # neither 1 nor the step: a decoding that drops d_h or uses the step is caught


class FakeNet(torch.nn.Module):
    """Stands in for GravityNet: fixed (N,) logits and (N, 2) offsets for any input of its shape."""

    def __init__(self, config: GravityConfig, logits: np.ndarray, offsets: np.ndarray):
        super().__init__()
        self.config = config
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.offsets = torch.as_tensor(offsets, dtype=torch.float32)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        b = x.shape[0]
        return self.logits.expand(b, -1).clone(), self.offsets.expand(b, -1, -1).clone()

    def points_for(self, shape, device=None):
        c = self.config
        gp = gravity_points(shape[-2:], c.step, stride=c.stride, layout=c.layout)
        return torch.from_numpy(gp).float().to(device or "cpu")


SHAPE = (40, 48)
CFG = GravityConfig(backbone="resnet18", step=4, stride=8, hooking_distance=D_H, nms_box=3)
GP = gravity_points(SHAPE, CFG.step, stride=CFG.stride)


def _predictor(logits, offsets, device_nms=False):
    pred = Predictor(FakeNet(CFG, logits, offsets), CFG, device="cpu", amp=False)
    pred.device_nms = device_nms  # True: the CUDA path (NMS on the device), run on CPU tensors
    return pred


def test_raw_output_is_gravity_point_plus_dh_times_offset_and_sigmoid_scores():
    assert CFG.d_h == D_H
    rng = np.random.default_rng(0)
    n = len(GP)
    logits = rng.uniform(-8, 8, n).astype(np.float32)
    offsets = rng.normal(0, 0.6, (n, 2)).astype(np.float32)
    raw = _predictor(logits, offsets).raw(np.zeros(SHAPE, np.float32))
    np.testing.assert_allclose(raw.gravity_points, GP, atol=1e-6)
    np.testing.assert_allclose(raw.points, GP + D_H * offsets, atol=1e-4)
    np.testing.assert_allclose(raw.scores, 1.0 / (1.0 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    assert raw.d_h == D_H


@pytest.mark.parametrize("device_nms", [False, True])
def test_detect_reports_the_moved_point_with_its_probability(device_nms):
    n = len(GP)
    logits = np.full(n, -12.0, np.float32)  # everything else scores ~6e-6
    offsets = np.zeros((n, 2), np.float32)
    k = int(np.flatnonzero((GP[:, 0] == 16) & (GP[:, 1] == 20))[0])
    logits[k], offsets[k] = 2.0, (0.5, -0.25)  # moved to (16 + 3.5, 20 - 1.75)
    j = int(np.flatnonzero((GP[:, 0] == 0) & (GP[:, 1] == 0))[0])
    logits[j], offsets[j] = 3.0, (-1.0, 0.0)  # moved 7 px above the image: dropped
    pred = _predictor(logits, offsets, device_nms)
    det = pred.detect(np.zeros(SHAPE, np.float32), threshold=0.5)
    assert len(det) == 1
    np.testing.assert_allclose(det.points[0], [19.5, 18.25], atol=1e-5)
    assert det.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
    # a logit of 0 is a probability of exactly 0.5: kept at γ = 0.5, not at γ just above
    logits[k] = 0.0
    pred = _predictor(logits, offsets, device_nms)
    img = np.ones(SHAPE, np.float32)
    assert len(pred.detect(img, threshold=0.5)) == 1
    assert len(pred.detect(img, threshold=0.5001)) == 0
