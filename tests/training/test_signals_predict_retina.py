"""SIGTERM stops cleanly (checkpoint + events) and --resume finishes; predict CLI; RetinaNet."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

from training.events import read_events


def test_sigterm_stops_cleanly_then_resume(tmp_path, make_tiny_config):
    from training.checkpoint import load_checkpoint
    from training.cli import main

    cfg = make_tiny_config(
        tmp_path / "c.yaml",
        train__epochs=50,
        train__max_steps_per_epoch=12,
        data__tiles_per_image=6,
        # steps heavy enough (~0.15 s) that SIGTERM lands inside the first epoch: with the
        # tiny 64-px tiles an idle machine could finish all 12 steps before the signal arrived
        data__tile_size=256,
    )
    run = tmp_path / "run"
    env = {**os.environ, "GRAVITY_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "train", str(cfg), "--out", str(run), "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    events = run / "events.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120:
        if events.is_file() and any(e["event"] == "step" for e in read_events(events)):
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped" in out
    ev = read_events(events)
    assert ev[-1]["event"] == "done" and ev[-1]["stopped"] is True
    state = load_checkpoint(run / "checkpoint.pt")
    spe = ev[0]["steps_per_epoch"]
    assert spe == 12
    assert state["next_epoch"] == 1 and 1 <= state["next_step"] < spe
    n_steps_before = sum(e["event"] == "step" for e in ev)
    assert n_steps_before >= 1
    # resume: the interrupted epoch continues where it stopped, then the run finishes
    rc = main(
        [
            "train",
            str(cfg),
            "--out",
            str(run),
            "--device",
            "cpu",
            "--resume",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    ev2 = read_events(events)
    steps = [e["step"] for e in ev2[len(ev) :] if e["event"] == "step"]
    assert steps[0] == state["next_step"] + 1 and steps[-1] == spe
    assert ev2[-1]["event"] == "done" and ev2[-1]["stopped"] is False
    assert (run / "model.safetensors").is_file()


def test_predict_cli_writes_csv_and_evaluates(tmp_path, trained_run, folder_dataset):
    from training.cli import main

    gt = tmp_path / "gt.csv"
    rows = ["image,y,x,radius"]
    for p in sorted(folder_dataset.glob("*.csv")):
        for line in p.read_text().splitlines()[1:]:
            y, x, r = line.split(",")
            rows.append(f"{p.stem},{y},{x},{r}")
    gt.write_text("\n".join(rows) + "\n")
    out = tmp_path / "pred"
    rc = main(
        [
            "predict",
            str(trained_run / "model.safetensors"),
            str(folder_dataset),
            "--out",
            str(out),
            "--threshold",
            "0.0",
            "--device",
            "cpu",
            "--no-progress",
            "--evaluate",
            str(gt),
        ]
    )
    assert rc == 0
    with (out / "predictions.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["image", "y", "x", "score"]
        pred = list(reader)
    images = {p.stem for p in folder_dataset.glob("*.tif")}
    assert {r["image"] for r in pred} == images
    scored = [float(r["score"]) for r in pred if r["score"]]
    assert scored and all(0.0 <= s <= 1.0 for s in scored)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == len(images) and summary["threshold"] == 0.0
    assert summary["n_detections"] == len(scored)
    ev = summary["evaluation"]
    assert 0.0 <= ev["aufroc"] <= 1.0 and ev["n_lesions"] == len(rows) - 1
    # batched forward passes (same-size images) give the same detections
    out3 = tmp_path / "pred3"
    args = [
        str(trained_run / "model.safetensors"),
        str(folder_dataset),
        "--threshold",
        "0.05",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(["predict", *args, "--out", str(tmp_path / "pred1")]) == 0
    assert main(["predict", *args, "--out", str(out3), "--batch-size", "4"]) == 0

    def rows_of(d):
        with (d / "predictions.csv").open() as f:
            return sorted(
                (r["image"], r["y"], r["x"], r["score"]) for r in csv.DictReader(f) if r["score"]
            )

    r1, r3 = rows_of(tmp_path / "pred1"), rows_of(out3)
    assert len(r1) == len(r3) > 0
    for a, b in zip(r1, r3, strict=True):
        assert (
            a[0] == b[0]
            and abs(float(a[1]) - float(b[1])) < 0.01
            and abs(float(a[3]) - float(b[3])) < 1e-3
        )
    # a missing input is a clean error naming it
    assert (
        main(
            [
                "predict",
                str(trained_run / "model.safetensors"),
                str(tmp_path / "nope.tif"),
                "--out",
                str(out),
            ]
        )
        == 1
    )


def test_retinanet_smoke_train_and_predict(tmp_path, make_tiny_config, folder_dataset):
    from training.cli import main

    cfg = make_tiny_config(tmp_path / "r.yaml", train__epochs=1, train__max_steps_per_epoch=1)
    text = cfg.read_text().replace("model: gravitynet", "model: retinanet")
    # RetinaNet's own net section
    import yaml

    raw = yaml.safe_load(text)
    raw["net"] = {"backbone": "resnet18"}
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "retina"
    assert main(["train", str(cfg), "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    model = run / "model.safetensors"
    from napari_gravity.core.registry import read_metadata

    md = read_metadata(model)
    assert md["model"] == "retinanet" and md["net"]["anchor_sizes"] == [8, 16, 32, 64, 128]
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(model),
                str(folder_dataset),
                "--out",
                str(out),
                "--threshold",
                "0",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header == "image,y,x,score"


def test_demo_runs_with_the_default_model(tmp_path):
    from napari_gravity.core.registry import default_model_path
    from training.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "256", "256", "--n-images", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    names = [r["method"] for r in rep["reports"]]
    assert "Hessian-DoG" in names and "top-hat" in names
    if default_model_path() is not None:
        assert names[0].startswith("GravityNet")
    assert (out / "predictions.csv").read_text().startswith("image,y,x,score")
    assert (out / "ground_truth.csv").is_file() and (out / "sample0.tif").is_file()


def test_predict_masks(tmp_path):
    import numpy as np
    from skimage.io import imsave

    from training.predict_cli import image_mask

    rng = np.random.default_rng(0)
    img = np.zeros((200, 160), np.float32)
    img[:, :90] = 2000 + 100 * rng.standard_normal(
        (200, 90)
    )  # "breast" on the left, air on the right
    p = tmp_path / "m.tif"
    assert image_mask(p, img, "none", "mc") is None
    assert image_mask(p, img, "auto", None) is None  # no sidecar, unknown task: no mask
    m = image_mask(p, img, "auto", "mc")  # MC model: breast mask
    assert m is not None and m[:, :80].mean() > 0.9 and m[:, 100:].mean() < 0.1
    side = np.zeros((200, 160), np.uint8)
    side[:50] = 255
    imsave(tmp_path / "m.mask.png", side, check_contrast=False)
    assert image_mask(p, img, "auto", "mc").sum() == 50 * 160  # the sidecar file wins
    assert image_mask(p, img, "file", None).sum() == 50 * 160
