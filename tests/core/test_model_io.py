import json
import os

import pytest
import torch
from safetensors.torch import save_file

from napari_gravity.core import (
    GravityConfig,
    GravityNet,
    ModelFileError,
    Predictor,
    load_model,
    read_model_metadata,
    save_model,
)

CFG = GravityConfig(backbone="resnet18", step=4, stride=16, head_channels=32, nms_box=5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GravityNet(CFG).eval()
    with torch.no_grad():
        m.reg_head[-1].weight.normal_(0, 0.01)
    return m


def test_round_trip(tmp_path, model):
    path = tmp_path / "m.safetensors"
    prov = {"commit": "abc", "data": "synthetic", "epochs": 3, "date": "2026-01-01", "parent": None}
    save_model(path, model, CFG, {"threshold": 0.42, "provenance": prov, "note": "hi"})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    meta = read_model_metadata(path)
    assert meta["format_version"] == 1 and meta["threshold"] == 0.42
    assert meta["provenance"] == prov and meta["note"] == "hi"
    assert GravityConfig.from_dict(meta["config"]) == CFG
    loaded = load_model(path)
    assert loaded.config == CFG and not loaded.model.training
    x = torch.rand(1, 1, 48, 40)
    with torch.no_grad():
        a, b = model(x), loaded.model(x)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    pred = Predictor.from_file(path, device="cpu")
    assert pred.config.threshold == 0.42


def test_half(tmp_path, model):
    full = save_model(tmp_path / "f.safetensors", model)
    half = save_model(tmp_path / "h.safetensors", model, half=True)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a = model(x)[0]
        b = load_model(half).model(x)[0]
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.01)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError, match=r"nope.safetensors.*not found"):
        load_model(p)
    assert isinstance(ModelFileError(p, "x"), ValueError)


def test_corrupt_file(tmp_path, model):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(os.urandom(300))
    with pytest.raises(ModelFileError, match=r"bad.safetensors"):
        load_model(p)
    # a truncated real model file
    good = save_model(tmp_path / "good.safetensors", model)
    data = open(good, "rb").read()
    t = tmp_path / "trunc.safetensors"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"trunc.safetensors"):
        load_model(t)


def test_not_a_gravity_file(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ModelFileError, match=r"other.safetensors.*without napari-gravity metadata"):
        load_model(p)


def _rewrite_meta(src, dst, **changes):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["napari_gravity"])
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata={"napari_gravity": json.dumps(meta)})


def test_wrong_format_version(tmp_path, model):
    src = save_model(tmp_path / "a.safetensors", model)
    dst = tmp_path / "future.safetensors"
    _rewrite_meta(src, dst, format_version=99)
    with pytest.raises(ModelFileError, match=r"future.safetensors.*version 99"):
        load_model(dst)


def test_config_weights_mismatch(tmp_path, model):
    src = save_model(tmp_path / "a.safetensors", model)
    dst = tmp_path / "mismatch.safetensors"
    _rewrite_meta(src, dst, config={**CFG.to_dict(), "step": 6})  # 9 points per cell, not 16
    with pytest.raises(ModelFileError, match=r"mismatch.safetensors.*do not match"):
        load_model(dst)
    dst2 = tmp_path / "backbone.safetensors"
    _rewrite_meta(src, dst2, config={**CFG.to_dict(), "backbone": "resnet34"})
    with pytest.raises(ModelFileError, match=r"backbone.safetensors.*missing"):
        load_model(dst2)


def test_invalid_config_in_file(tmp_path, model):
    src = save_model(tmp_path / "a.safetensors", model)
    dst = tmp_path / "cfg.safetensors"
    _rewrite_meta(src, dst, config={**CFG.to_dict(), "colour": "red"})
    with pytest.raises(ModelFileError, match=r"cfg.safetensors.*colour"):
        read_model_metadata(dst)


def test_atomic_overwrite_keeps_old_file_on_failure(tmp_path, model, monkeypatch):
    """The write fails *after* bytes reached the file it was given (a disk that fills up
    mid-write): the previous model must survive intact, and no temp file may be left."""
    import safetensors.torch

    p = tmp_path / "m.safetensors"
    save_model(p, model)
    before = p.read_bytes()
    real = safetensors.torch.save_file
    written = []

    def torn(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        size = os.path.getsize(filename)
        with open(filename, "r+b") as fh:
            fh.truncate(size // 2)  # half of the bytes made it to disk
        written.append(size // 2)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    other = GravityNet(CFG).eval()  # different weights: a completed write would change the file
    with pytest.raises(OSError, match="disk full"):
        save_model(p, other, metadata={"name": "new"})
    assert written and written[0] > 0  # the failure came after bytes were written
    assert p.read_bytes() == before
    monkeypatch.undo()
    assert read_model_metadata(p).get("name") != "new"
    load_model(p)  # still a valid model file
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.safetensors"]
