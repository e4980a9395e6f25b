"""Tiny fixtures for the trainer tests: a generic-folder dataset of small images with bright
spots (written with plain numpy + tifffile, following the folder convention of
docs/architecture.md) and a tiny config (ResNet-18 cut at layer2, 64-px tiles, 1-2 steps)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("GRAVITY_NO_PROGRESS", "1")


def _spot_image(rng: np.random.Generator, size: int, n_spots: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = 1000 + 60 * rng.standard_normal((size, size))
    pts = []
    for _ in range(n_spots):
        y, x = rng.uniform(8, size - 8, size=2)
        img += 900 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
        pts.append((y, x))
    return np.clip(img, 0, 65535).astype(np.uint16), np.asarray(pts).reshape(-1, 2)


def write_folder_dataset(root: Path, n: int = 6, size: int = 96, seed: int = 0) -> Path:
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        n_spots = 0 if k % 3 == 2 else int(rng.integers(2, 5))
        img, pts = _spot_image(rng, size, n_spots)
        tifffile.imwrite(root / f"img{k:02d}.tif", img)
        if n_spots:
            lines = ["y,x,radius"] + [f"{y:.2f},{x:.2f},2.0" for y, x in pts]
            (root / f"img{k:02d}.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(data_root: Path, **over) -> dict:
    cfg = {
        "model": "gravitynet",
        "name": "tiny-test",
        "net": {
            "backbone": "resnet18",
            "stride": 8,
            "step": 4,
            "head_channels": 32,
            "head_norm": "gn",
            "nms_box": 5,
        },
        "data": {
            "root": str(data_root),
            "format": "folder",
            "val_ids": None,
            "tile_size": 64,
            "tiles_per_image": 2,
            "pos_fraction": 0.7,
            "val_fraction": 0.34,
        },
        "train": {"epochs": 2, "batch_size": 2, "max_steps_per_epoch": 2, "seed": 0, "lr": 1e-3},
        "eval": {"target_fppi": 1.0},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        cfg.setdefault(section, {})[name] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data") / "folder")


@pytest.fixture(scope="session")
def tiny_cfg_path(tmp_path_factory, folder_dataset) -> Path:
    d = tmp_path_factory.mktemp("cfg")
    return write_config(d / "tiny.yaml", tiny_config(folder_dataset))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_cfg_path) -> Path:
    """One tiny end-to-end training run shared by several tests."""
    from training.cli import main

    run = tmp_path_factory.mktemp("runs") / "base"
    rc = main(["train", str(tiny_cfg_path), "--out", str(run), "--device", "cpu", "--no-progress"])
    assert rc == 0
    return run


@pytest.fixture(scope="session")
def make_tiny_config(folder_dataset):
    """``make_tiny_config(path, train__epochs=1, ...)`` writes a tiny config and returns its path."""

    def make(path: Path, **over) -> Path:
        return write_config(path, tiny_config(folder_dataset, **over))

    return make
