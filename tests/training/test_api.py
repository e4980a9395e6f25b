"""The notebook entry points: ``train(config | dict | path)`` and ``fit(images, points)``."""

from __future__ import annotations

import numpy as np
import pytest

from training.api import fit, train
from training.config import ConfigError, load_config


def _spots(rng: np.random.Generator, pts: list[tuple[float, float]], size: int = 96):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = 0.3 + 0.02 * rng.standard_normal((size, size))
    for y, x in pts:
        img += 0.5 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return img.astype(np.float32)


def test_fit_trains_on_two_arrays_for_one_epoch(tmp_path):
    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.data.datasets import open_dataset

    rng = np.random.default_rng(0)
    points = [np.array([[20.0, 30.5], [60.25, 70.0]]), np.array([[40.0, 45.0, 2.5]])]
    images = [_spots(rng, p[:, :2].tolist()) for p in points]
    small = {"net__head_channels": 32, "data__tile_size": 64, "train__batch_size": 2}
    model = fit(images, points, out=tmp_path / "fit", epochs=1, progress=False, **small)

    assert model == tmp_path / "fit" / "model.safetensors" and model.is_file()
    md = read_model_metadata(model)
    assert md["task"] == "mc" and md["provenance"]["epochs"] == 1
    cfg = md["provenance"]["config"]
    assert cfg["train"]["epochs"] == 1 and cfg["net"]["head_channels"] == 32
    assert cfg["data"]["root"] == str(tmp_path / "fit" / "data")
    assert md["provenance"]["data"]["n_train"] + md["provenance"]["data"]["n_val"] == 2
    # the arrays were written losslessly in the generic folder layout the readers know
    back = {r.image_id: r.load() for r in open_dataset(tmp_path / "fit" / "data")}
    assert sorted(back) == ["img000", "img001"]
    for k, (img, pts) in enumerate(zip(images, points, strict=True)):
        s = back[f"img{k:03d}"]
        np.testing.assert_array_equal(s.image, img)
        np.testing.assert_allclose(s.points, pts[:, :2], atol=1e-3)
    np.testing.assert_allclose(back["img001"].radii, [2.5])


def test_fit_refuses_an_override_without_a_section(tmp_path):
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(ConfigError, match="section__key"):
        fit([img], [np.zeros((0, 2))], out=tmp_path / "x", lr=1e-3)
    with pytest.raises(ConfigError, match=r"train\.lr: must be > 0"):
        fit([img], [np.zeros((0, 2))], out=tmp_path / "y", train__lr=-1.0)
    assert not (tmp_path / "y").exists()  # refused before anything was written


def test_train_accepts_a_mapping_a_path_or_a_config(tmp_path, tiny_cfg_path):
    from napari_gravity.core.model_io import read_model_metadata

    cfg = load_config(tiny_cfg_path)
    raw = cfg.to_dict()
    one = ["train.epochs=1", "train.max_steps_per_epoch=1"]
    m = train(raw, overrides=one, out=tmp_path / "dict", progress=False, device="cpu")
    assert m == tmp_path / "dict" / "model.safetensors"
    assert read_model_metadata(m)["provenance"]["config"]["train"]["epochs"] == 1
    m2 = train(cfg, overrides=one, out=tmp_path / "typed", progress=False, device="cpu")
    m3 = train(tiny_cfg_path, overrides=one, out=tmp_path / "path", progress=False, device="cpu")
    # the same config three ways: the same training, the same weights
    assert _weights(m2) == _weights(m) == _weights(m3)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(raw, overrides=one, out=tmp_path / "dict", progress=False, device="cpu")
    with pytest.raises(ConfigError, match=r"train\.lr: must be > 0"):
        train(raw, overrides=["train.lr=0"], out=tmp_path / "bad")


def _weights(path) -> list[bytes]:
    from safetensors.numpy import load_file

    t = load_file(str(path))
    return [t[k].tobytes() for k in sorted(t)]


def test_an_ma_model_names_the_fov_scale_of_its_fundus_recipe(tmp_path, tiny_cfg_path):
    """Trained on a fundus recipe (all drawn at FOV_PX across), a microaneurysm model names
    that scale for the Predictor's resampling; a folder of the user's images names none."""
    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.data.synthetic.fundus import FOV_PX

    raw = load_config(tiny_cfg_path).to_dict()
    raw["task"] = "ma"
    raw["data"]["root"] = None
    raw["data"]["synthetic"] = {
        "recipe": "ma-tiny", "counts": {"train": 2, "val": 1, "test": 0}, "size": [96, 96]
    }  # fmt: skip
    one = ["train.epochs=1", "train.max_steps_per_epoch=1"]
    m = train(raw, overrides=one, out=tmp_path / "ma", progress=False, device="cpu")
    md = read_model_metadata(m)
    assert md["task"] == "ma" and md["fov_diameter_px"] == FOV_PX == 1200.0
    raw["data"]["synthetic"] = None
    raw["data"]["root"] = load_config(tiny_cfg_path).data.root
    m = train(raw, overrides=one, out=tmp_path / "folder", progress=False, device="cpu")
    assert "fov_diameter_px" not in read_model_metadata(m)
