"""`gravity predict default`: each image goes to the bundled model of its task."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from napari_gravity.core.registry import default_model_path
from training.cli import main


def test_a_mixed_folder_is_routed_per_image(tmp_path):
    if default_model_path("ma") is None or default_model_path("mc") is None:
        pytest.fail("both bundled default models must be installed")
    from skimage import data

    from napari_gravity.data.synthetic import synth_mammogram

    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "eye.jpg", data.retina()[500:756, 400:656], quality=92)
    iio.imwrite(folder / "breast.png", synth_mammogram((192, 192), 3).image.astype(np.uint16))
    out = tmp_path / "out"
    assert main(["predict", "default", str(folder), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_image = {r["image"]: r["model"] for r in summary["images"]}
    assert by_image == {"eye": "default_ma", "breast": "default_mc"}
    assert set(summary["models"]) == {"default_ma", "default_mc"}
    for spec, info in summary["models"].items():
        assert info["task"] == spec.split("_")[1]


def test_format_inbreast_predicts_in_the_data_sets_frame_and_ids(tmp_path):
    """`--format inbreast`: ids and orientation as open_dataset gives them (right breasts
    mirrored back), so the predictions match make_benchmark's ground truth and the API."""
    import csv

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.datasets import open_dataset
    from napari_gravity.data.synthetic import make_benchmark

    root = tmp_path / "b"
    make_benchmark(
        root, "mc-tiny", format="inbreast", counts={"train": 0, "val": 0, "test": 4}, size=(96, 96)
    )
    out = tmp_path / "out"
    args = ["predict", "default", str(root / "test"), "--format", "inbreast", "--out", str(out)]
    assert main([*args, "--threshold", "0.05", "--no-progress"]) == 0
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(root / "test_ground_truth.csv", newline="") as fh:
        gt_ids = {r["image"] for r in csv.DictReader(fh)}
    assert {r["image"] for r in rows} <= gt_ids and rows
    pred = Predictor.from_file(default_model_path("mc"), device="cpu", tta="auto")  # the CLI's
    for ref in open_dataset(root / "test", format="inbreast"):
        s = ref.load()
        det = pred.detect(s.image, mask=s.mask, threshold=0.05)
        mine = sorted((float(r["y"]), float(r["x"])) for r in rows if r["image"] == ref.image_id)
        # the CSV keeps 3 decimals: order the API's points by the same rounded values (two
        # detections less than 1e-3 px apart in y would otherwise sort differently)
        api = sorted((round(float(y), 3), round(float(x), 3)) for y, x in det.points)
        assert np.allclose(mine, api, atol=1e-3)


def test_bf16_is_opt_in_recorded_and_close_to_fp32(tmp_path):
    """--bf16 reaches the Predictor (CPU autocast), is part of the run's settings, and its
    scores stay within bf16 rounding of the fp32 run's on the same detections."""
    import csv

    from napari_gravity.data.synthetic import synth_mammogram
    from training.predict_cli import load_detector

    det, *_ = load_detector("default_mc", "cpu", cpu_bf16=True)
    assert det.cpu_bf16 and not load_detector("default_mc", "cpu")[0].cpu_bf16
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "b.png", synth_mammogram((192, 192), 5).image.astype(np.uint16))
    rows = {}
    for flag in ([], ["--bf16"]):
        out = tmp_path / f"out{len(flag)}"
        args = ["predict", "default_mc", str(folder), "--out", str(out), "--device", "cpu"]
        assert main([*args, "--threshold", "0.3", "--no-progress", *flag]) == 0
        with open(out / "predictions.csv", newline="") as fh:
            rows[bool(flag)] = {
                (round(float(r["y"])), round(float(r["x"]))): float(r["score"])
                for r in csv.DictReader(fh)
                if r["score"]
            }
        settings = json.loads((out / "summary.json").read_text())["settings"]
        assert settings.get("bf16", False) is bool(flag)
    common = set(rows[False]) & set(rows[True])
    assert len(common) >= 0.8 * max(len(rows[False]), 1) and rows[False]
    assert max(abs(rows[False][k] - rows[True][k]) for k in common) < 0.05
    assert any(rows[False][k] != rows[True][k] for k in common)  # bf16 did run


def test_tta_auto_is_the_default_and_uses_its_own_calibration(tmp_path):
    """On a tile `gravity predict` averages 8 views at the γ / NMS calibrated for them (as the
    API's Predictor in mode d8 does); --tta off is the one-pass model at its own γ. The tile is
    512²: more tissue than the model's validation tiles, so both runs use the area rule's γ."""
    import csv

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.masks import tissue_mask
    from napari_gravity.data.synthetic import synth_mammogram

    image = synth_mammogram((512, 512), 11).image.astype(np.uint16)
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "tile.png", image)
    path = default_model_path("mc")
    mask = tissue_mask(image.astype(np.float32), "mc")
    got, rows = {}, {}
    for mode in ("auto", "off"):
        out = tmp_path / mode
        extra = [] if mode == "auto" else ["--tta", "off"]
        assert (
            main(["predict", "default_mc", str(folder), "--out", str(out), "--no-progress", *extra])
            == 0
        )
        with open(out / "predictions.csv", newline="") as fh:
            got[mode] = sorted((float(r["y"]), float(r["x"])) for r in csv.DictReader(fh) if r["y"])
        summary = json.loads((out / "summary.json").read_text())
        info = summary["models"]["default_mc"]
        assert info["tta"] == mode and set(info["tta_thresholds"]) == {"flips", "d8"}
        assert info["area_rule"] == ["d8", "flips", "off"]
        rows[mode] = summary["images"][0]
    for mode, key in (("d8", "auto"), ("off", "off")):
        pred = Predictor.from_file(path, device="cpu", tta=mode)
        area = pred.tissue_area(image.shape, mask)
        gamma = pred.params_for(mode, area)["threshold"]
        assert gamma > pred.params_for(mode)["threshold"]
        # each image's row says the mode and the raised γ it was detected with
        assert rows[key]["tta"] == mode and rows[key]["threshold"] == pytest.approx(gamma)
        det = pred.detect(image, mask=mask)
        api = sorted((round(float(y), 3), round(float(x), 3)) for y, x in det.points)
        assert len(api) == len(got[key]) and np.allclose(got[key], api, atol=1e-3), mode
    assert got["auto"] != got["off"]


def test_a_high_resolution_fundus_is_resampled_to_the_models_scale(tmp_path):
    """The retina photographed at twice the resolution: `gravity predict default` resamples it to
    the MA model's field-of-view scale and writes the points in the file's own pixels."""
    import csv

    from skimage import data

    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.data.masks import fundus_mask

    ref = read_model_metadata(default_model_path("ma")).get("fov_diameter_px")
    if ref is None:
        pytest.fail("the bundled default_ma must name its field-of-view scale")
    big = np.repeat(np.repeat(data.retina(), 2, 0), 2, 1)  # 2822² px, a FOV ~2,790 px across
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "eye.png", big)
    out = tmp_path / "out"
    assert main(["predict", "default", str(folder), "--out", str(out), "--no-progress"]) == 0
    row = json.loads((out / "summary.json").read_text())["images"][0]
    # second method: the diameter of a disc of the mask's area
    mask = fundus_mask(big)
    want = ref / (2 * np.sqrt(mask.sum() / np.pi))
    assert row["model"] == "default_ma" and row["zoom"] == pytest.approx(want, rel=0.02)
    with open(out / "predictions.csv", newline="") as fh:
        pts = np.array([(float(r["y"]), float(r["x"])) for r in csv.DictReader(fh) if r["y"]])
    assert len(pts) and np.all((pts >= 0) & (pts < big.shape[0]))  # the file's pixels
    iy, ix = np.floor(pts + 0.5).astype(int).T
    assert mask[iy, ix].all()  # inside the field of view, as the mask filter keeps them


def test_tta_whole_reaches_the_predictor_for_whole_mammograms():
    """``gravity predict --tta-whole flips``: a whole mammogram (above the 8-view limit) gets the
    4 flips, a tile still the 8 views; the default stays one pass on whole images."""
    from training.cli import build_parser
    from training.predict_cli import load_detector

    det = load_detector("default_mc", "cpu", tta="auto", tta_whole="flips")[0]
    assert det.tta_mode((3328, 2560)) == "flips" and det.tta_mode((512, 512)) == "d8"
    assert load_detector("default_mc", "cpu", tta="auto")[0].tta_mode((3328, 2560)) == "off"
    args = build_parser().parse_args(["predict", "default", "x.png", "--out", "o"])
    assert args.tta_whole == "off"
    args = build_parser().parse_args(
        ["predict", "default", "x.png", "--out", "o", "--tta-whole", "flips"]
    )
    assert args.tta_whole == "flips"


def test_an_inverted_mammogram_is_inverted_back_and_said_so(tmp_path, capsys):
    """A mammogram saved with its grey values inverted (air bright: MONOCHROME1 data without the
    tag) used to be detected as it was (AUFROC 5 % against 44 %, benchmarks/mc_camera.py). It is
    inverted back — exactly the upright file's detections — and its row says so."""
    from napari_gravity.data.synthetic import synth_mammogram
    from training.predict_cli import load_detector, predict_paths

    x = synth_mammogram((512, 400), 3, breast=True).image.astype(np.int64)
    up = (x - x.min()).astype(np.uint16)
    down = (x.max() - x).astype(np.uint16)  # what inverting `up` back gives is `up` itself
    iio.imwrite(tmp_path / "up.png", up)
    iio.imwrite(tmp_path / "down.png", down)
    det = load_detector("default_mc", "cpu", tta="auto")[0]
    paths = [tmp_path / "up.png", tmp_path / "down.png"]
    preds, rows = predict_paths(
        det, paths, ["up", "down"], None, progress=False, mask_mode="auto", task="mc"
    )
    assert len(preds["up"].points) > 0
    np.testing.assert_array_equal(preds["down"].points, preds["up"].points)
    np.testing.assert_array_equal(preds["down"].scores, preds["up"].scores)
    notes = {r["image"]: r.get("note") for r in rows}
    assert notes["up"] is None and "inverted back" in notes["down"]
    assert "down.png: grey values inverted back" in capsys.readouterr().err


def test_predict_finds_a_dark_photographs_field_of_view_from_its_colours(tmp_path):
    """``gravity predict``'s reader hands the brightest channel to the fundus mask: a dark
    photograph with a grey border gets its real field of view, not the whole frame."""
    from skimage import data

    from napari_gravity.data.masks import fundus_mask
    from training.predict_cli import ImageInputs

    rgb = data.retina().astype(np.float32)
    fov = fundus_mask(rgb[..., 0], erode=0)
    dark = rgb * 0.35
    for k, level in enumerate((42, 30, 26)):
        dark[..., k][~fov] = level
    iio.imwrite(tmp_path / "dark.jpg", np.clip(dark, 0, 255).astype(np.uint8), quality=95)
    got = ImageInputs([tmp_path / "dark.jpg"], ["dark"], mask_mode="auto", task="ma")[0]
    assert got.error is None
    assert (got.mask & fov).sum() / (got.mask | fov).sum() > 0.95
