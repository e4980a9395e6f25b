"""``gravity predict`` with bad flags and bad files in a folder (issue 13)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch
from corpus import tiled_tiff_bomb

from napari_gravity.core import GravityConfig, GravityNet, save_model
from training.cli import main

CFG = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(path, GravityNet(CFG).eval(), CFG, {"threshold": 0.0})
    return path


def _args(model, inputs, out, *extra):
    return [
        "predict",
        str(model),
        *map(str, inputs),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--mask",
        "none",
        *extra,
    ]


@pytest.mark.parametrize("box", ["0", "-5", "nan", "inf"])
def test_bad_nms_box_is_a_clear_error(tmp_path, model_file, box, capsys):
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint16))
    rc = main(_args(model_file, [img], tmp_path / "out", "--nms-box", box))
    err = capsys.readouterr().err
    assert rc == 1 and "--nms-box must be a positive number of pixels" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_folder_keeps_going_past_bad_files(tmp_path, model_file, capsys, workers):
    """In this process and in DataLoader reader processes alike."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("good1", "good2"):
        tifffile.imwrite(data / f"{name}.tif", rng.integers(0, 4000, (40, 48)).astype(np.uint16))
    (data / "broken.tif").write_bytes(b"II*\x00" + bytes(20))  # truncated TIFF
    (data / "empty.png").write_bytes(b"")
    tiled_tiff_bomb(data / "bomb.tif")  # refused from its header, nothing allocated
    tifffile.imwrite(data / "tiny.tif", np.zeros((1, 1), np.uint16))
    out = tmp_path / "out"
    rc = main(_args(model_file, [data], out, "--threshold", "0.0", "--workers", workers))
    err = capsys.readouterr().err
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    failed = {f["image"]: f["error"] for f in summary["failed"]}
    assert set(failed) == {"broken", "empty", "bomb", "tiny"} and summary["n_failed"] == 4
    assert "bomb.tif" in failed["bomb"] and "pixels" in failed["bomb"]
    assert summary["n_images"] == 2 and [r["image"] for r in summary["images"]] == [
        "good1",
        "good2",
    ]
    for name in failed:
        assert f"skipped {data / name}" in err
    assert "4 of 6 image(s) failed" in err and "Traceback" not in err
    with (out / "predictions.csv").open() as fh:
        ids = {row["image"] for row in csv.DictReader(fh)}
    assert ids == {"good1", "good2"}  # threshold 0: every good image has detections


def test_all_good_exits_zero(tmp_path, model_file):
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.full((32, 32), 7, np.uint16))
    assert main(_args(model_file, [img], tmp_path / "out")) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_failed"] == 0


def test_hostile_retinanet_files_are_named_errors(tmp_path, capsys):
    """The RetinaNet comparator's files: missing 'net', NaN weights, NaN threshold, wrong
    tensors → a clear error naming the file, no traceback."""
    import json as _json

    from safetensors.torch import save_file

    from training.retinanet import build_retinanet, validate_retinanet_net

    net = validate_retinanet_net({})
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in build_retinanet(net).state_dict().items()}
    base = {"format_version": 1, "model": "retinanet", "net": net, "threshold": 0.5}
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.full((64, 64), 9, np.uint16))
    nan_sd = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()
    }
    cases = {
        "no_net": ({k: v for k, v in base.items() if k != "net"}, sd, "RetinaNet"),
        "nan_weights": (base, nan_sd, "NaN/inf"),
        "nan_threshold": ({**base, "threshold": float("nan")}, sd, "threshold"),
        "few_tensors": (base, dict(list(sd.items())[:3]), "RetinaNet model file"),
    }
    for name, (md, tensors, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={k: _json.dumps(v) for k, v in md.items()})
        rc = main(_args(path, [img], tmp_path / f"out_{name}"))
        err = capsys.readouterr().err
        assert rc == 1 and str(path) in err and match in err, (name, err[-500:])
        assert "Traceback" not in err
