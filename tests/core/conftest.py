"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest
import torch

from napari_gravity.core import GravityConfig, GravityNet


@pytest.fixture(scope="module")
def paper_net():
    """ResNet-18 cut at stride 8 without GroupNorm (paper heads), min-max normalisation, random
    weights whose scores vary: every output depends only on the pixels within its receptive
    field, and a uniform rescale of the intensities changes nothing."""
    torch.manual_seed(3)
    cfg = GravityConfig(
        backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5, normalization="minmax"
    )
    model = GravityNet(cfg).eval()
    with torch.no_grad():
        model.cls_head[-1].bias.fill_(0.0)
        model.cls_head[-1].weight.mul_(20)
        model.reg_head[-1].weight.normal_(0, 0.05)
    return model
