"""CUDA checks (marker ``gpu``; skipped without a GPU)."""

import numpy as np
import pytest
import torch

from napari_gravity.core import GravityConfig, GravityNet, Predictor, gravity_points
from napari_gravity.core.postprocess import nms_keep, nms_keep_torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_gpu_nms_equals_cpu():
    rng = np.random.default_rng(0)
    gp = gravity_points((640, 512), 6)
    pts = gp + rng.normal(0, 3, gp.shape)
    sc = rng.random(len(gp))
    want = nms_keep(pts, sc, 7)
    got = nms_keep_torch(torch.from_numpy(pts).cuda(), torch.from_numpy(sc).cuda(), 7)
    np.testing.assert_array_equal(got.cpu().numpy(), want)


def test_predictor_on_cuda_matches_cpu():
    torch.manual_seed(0)
    cfg = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)
    model = GravityNet(cfg)
    with torch.no_grad():
        model.cls_head[-1].bias.fill_(0.0)
        model.reg_head[-1].weight.normal_(0, 0.05)
    img = np.random.default_rng(1).uniform(0, 1, (96, 80)).astype(np.float32)
    cpu = Predictor(model, cfg, device="cpu", amp=False).detect(img, threshold=0.3)
    gpu = Predictor(model, cfg, device="cuda", amp=False).detect(img, threshold=0.3)
    assert abs(len(cpu) - len(gpu)) <= max(2, len(cpu) // 20)
    amp = Predictor(model, cfg, device="cuda").raw(img)  # bf16 autocast path runs
    assert amp.scores.dtype == np.float32 and np.isfinite(amp.scores).all()
