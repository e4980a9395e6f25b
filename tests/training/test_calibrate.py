"""gravity calibrate: NMS and threshold chosen on validation images, weights untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_gravity.core.config import GravityConfig
from napari_gravity.core.model import GravityNet
from napari_gravity.core.model_io import load_model, read_model_metadata, save_model
from napari_gravity.data.synthetic import make_benchmark
from napari_gravity.evaluation.froc import froc_curve
from training.calibrate import CalibrationError, calibrate_model
from training.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal") / "b"
    make_benchmark(root, "mc-tiny", counts={"train": 0, "val": 3, "test": 0}, size=(96, 96))
    return root


def _model(path, seed=0):
    torch.manual_seed(seed)
    cfg = GravityConfig(backbone="resnet18", stride=8, step=4, head_channels=32, head_norm="gn")
    net = GravityNet(cfg)
    with torch.no_grad():  # a model whose scores vary: random head weights
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(path, net, cfg, {"task": "mc", "name": "t"})
    return net


def test_calibrated_threshold_and_nms_reproduce_on_the_validation_images(tmp_path, bench):
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic import load_benchmark

    src, out = tmp_path / "m.safetensors", tmp_path / "c.safetensors"
    _model(src)
    cal = calibrate_model(src, bench, out, target_fppi=2.0)
    chosen = cal["chosen"]
    assert chosen["val_aufroc"] == max(r["val_aufroc"] for r in cal["grid"])
    md = read_model_metadata(out)
    assert md["config"]["nms_box"] == chosen["nms_box"]
    assert md["threshold"] == pytest.approx(chosen["threshold"])
    # second method: rerun detection with the stored settings; FPpI at the threshold <= target
    samples = [r.load() for r in load_benchmark(bench)["val"]]
    pred = Predictor.from_file(out, device="cpu")
    dets = {s.image_id: pred.detect(s.image, mask=s.mask) for s in samples}
    res = froc_curve(dets, {s.image_id: s for s in samples}, [s.image_id for s in samples])
    assert res.fppi[-1] <= 2.0 + 1e-9
    # weights are the source's
    a, b = load_model(src).model.state_dict(), load_model(out).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refuses_to_overwrite_its_source_and_empty_data(tmp_path, bench, capsys):
    src = tmp_path / "m.safetensors"
    _model(src)
    assert main(["calibrate", str(src), str(bench), "--out", str(src)]) == 1
    assert "choose another file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match=r"empty|no validation|no image"):
        calibrate_model(src, empty, tmp_path / "x.safetensors")
    assert np.isfinite(read_model_metadata(src)["threshold"])


def test_each_tta_mode_gets_its_own_calibration_that_reproduces(tmp_path, bench):
    """Averaged views score differently from one pass: each mode's stored γ must give at most
    the target FPpI when detection runs in that mode (a second method: fresh detections)."""
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic import load_benchmark

    src, out = tmp_path / "m.safetensors", tmp_path / "c.safetensors"
    _model(src, seed=1)
    cal = calibrate_model(src, bench, out, target_fppi=2.0, tta=("d8",))
    assert set(cal["tta"]) == {"d8"}
    rec = read_model_metadata(out)["tta"]["d8"]
    assert rec["val_aufroc"] == max(r["val_aufroc"] for r in rec["grid"])
    samples = [r.load() for r in load_benchmark(bench)["val"]]
    gt = {s.image_id: s for s in samples}
    d8 = Predictor.from_file(out, device="cpu", tta="d8")
    assert d8.params_for("d8") == {k: rec[k] for k in ("threshold", "nms_box", "nms_iou")}
    res = froc_curve({i: d8.detect(s.image, mask=s.mask) for i, s in gt.items()}, gt, list(gt))
    assert res.fppi[-1] <= 2.0 + 1e-9
    # "auto" takes d8 on these small images; without the record it stays at one pass
    assert Predictor.from_file(out, device="cpu", tta="auto").tta_mode((96, 96)) == "d8"
    calibrate_model(src, bench, tmp_path / "plain.safetensors", tta=())
    assert "tta" not in read_model_metadata(tmp_path / "plain.safetensors")
    plain = Predictor.from_file(tmp_path / "plain.safetensors", device="cpu", tta="auto")
    assert plain.tta_mode((96, 96)) == "off"


def test_area_rule_holds_the_validation_false_positives(tmp_path, bench):
    """The stored FP scores are the validation FPs at the stored γ (fresh detections count
    them again), and the γ the rule gives for an image as large as all validation images
    together lets through at most one of them (the target) on those images."""
    from napari_gravity.core.config import area_rules, area_threshold
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic import load_benchmark

    src, out = tmp_path / "m.safetensors", tmp_path / "c.safetensors"
    _model(src, seed=2)
    calibrate_model(src, bench, out, target_fppi=2.0, tta=())
    rule = area_rules(read_model_metadata(out))["off"]
    samples = [r.load() for r in load_benchmark(bench)["val"]]
    gt = {s.image_id: s for s in samples}
    pred = Predictor.from_file(out, device="cpu")
    g0 = pred.config.threshold

    def fps(threshold):
        dets = {i: pred.detect(s.image, mask=s.mask, threshold=threshold) for i, s in gt.items()}
        return int(froc_curve(dets, gt, list(gt)).fp[-1])

    assert len(rule["fp_scores"]) == fps(g0) and (rule["fp_scores"] >= g0).all()
    tissue = sum(s.image.size if s.mask is None else int(s.mask.sum()) for s in samples)
    assert rule["tissue_px"] == tissue and rule["target_fppi"] == 2.0
    g_all = area_threshold(g0, rule, tissue)  # one image holding every validation pixel
    assert g_all >= g0 and fps(g_all) <= 2


def test_fov_diameter_is_stored_for_the_predictor_and_checked(tmp_path, bench, capsys):
    from napari_gravity.core.predictor import Predictor

    src, out = tmp_path / "m.safetensors", tmp_path / "c.safetensors"
    _model(src)
    args = ["calibrate", str(src), str(bench), "--tta", "none", "--out", str(out)]
    assert main([*args, "--fov-diameter", "1200"]) == 0
    assert read_model_metadata(out)["fov_diameter_px"] == 1200.0
    assert Predictor.from_file(out, device="cpu").fov_reference == 1200.0
    assert Predictor.from_file(src, device="cpu").fov_reference is None  # not stored: never
    capsys.readouterr()
    assert main([*args, "--fov-diameter", "nan"]) == 1
    assert "--fov-diameter nan: expected a diameter of 100-20000 px" in capsys.readouterr().err
