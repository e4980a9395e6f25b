"""Fixtures for the plugin tests: isolated folders, a tiny model, a small image folder."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def gravity_env(tmp_path, monkeypatch):
    """Samples, registry and runs in a temporary folder (never the user's home)."""
    for var, sub in (
        ("GRAVITY_SAMPLES", "samples"),
        ("GRAVITY_MODELS", "models"),
        ("GRAVITY_RUNS", "runs"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("GRAVITY_NO_PROGRESS", "1")
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A ResNet-18 GravityNet with random weights saved by the core's save_model."""
    import torch

    from napari_gravity.core.config import GravityConfig
    from napari_gravity.core.model import GravityNet
    from napari_gravity.core.model_io import save_model

    torch.manual_seed(0)
    cfg = GravityConfig(backbone="resnet18", step=10, head_channels=32, nms_box=7.0)
    model = GravityNet(cfg)
    with torch.no_grad():  # spread the scores around 0.5 and move the points a little
        model.cls_head[-1].bias.zero_()
        model.cls_head[-1].weight.mul_(20.0)
        torch.nn.init.normal_(model.reg_head[-1].weight, std=0.02)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, model, cfg, {"name": "tiny", "threshold": 0.5, "provenance": {"epochs": 0}})
    return path


def write_image_folder(folder, n=2, shape=(256, 256), seed=0):
    """``n`` synthetic mammogram patches as TIFF + ground-truth CSV (via the data layer)."""
    import tifffile

    from napari_gravity.data.annotations import write_points_csv
    from napari_gravity.data.synthetic import synth_mammogram

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        s = synth_mammogram(shape=shape, seed=seed + k, has_lesions=True)
        p = folder / f"img{k}.tif"
        tifffile.imwrite(p, np.asarray(s.image, dtype=np.float32))
        write_points_csv(folder / f"img{k}.csv", s.points, s.radii)
        paths.append(p)
    return paths


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "images")


@pytest.fixture
def image_folder4(tmp_path):
    return write_image_folder(tmp_path / "four", n=4)
