"""End-to-end trainer CLI: events, model file, metrics, resume, fine-tuning provenance."""

from __future__ import annotations

import csv
import hashlib
import json

from training.events import EVENT_KINDS, read_events


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_train_writes_events_model_and_metrics(trained_run):
    from napari_gravity.core.model_io import load_model

    ev = read_events(trained_run / "events.jsonl")
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds) <= set(EVENT_KINDS) and {"step", "epoch", "best"} <= set(kinds)
    assert all(isinstance(e["time"], float) for e in ev)
    start = ev[0]
    assert start["epochs"] == 2 and start["steps_per_epoch"] == 2
    steps = [e for e in ev if e["event"] == "step"]
    assert {"epoch", "step", "steps_per_epoch", "loss"} <= set(steps[0])
    epochs = [e for e in ev if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert {"train_loss", "val_aufroc", "lr", "eta_s"} <= set(e)
        assert 0.0 <= e["val_aufroc"] <= 1.0
    done = ev[-1]
    model_path = trained_run / "model.safetensors"
    assert done["model_path"] == str(model_path) and done["stopped"] is False
    loaded = load_model(model_path)
    md = loaded.metadata
    assert 0.0 <= md["threshold"] <= 1.0 and md["threshold"] == done["threshold"]
    assert md["provenance"]["epochs"] == 2 and md["provenance"]["parent"] is None
    assert md["provenance"]["config"]["net"]["stride"] == 8
    rows = list(csv.DictReader((trained_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (trained_run / "froc_best.png").is_file()
    curve = json.loads((trained_run / "froc_best.json").read_text())
    assert curve["epoch"] == done["best_epoch"]


def test_refuses_to_reuse_a_run_dir_without_resume(trained_run, tiny_cfg_path):
    from training.cli import main

    rc = main(["train", str(tiny_cfg_path), "--out", str(trained_run), "--device", "cpu"])
    assert rc == 1


def test_resume_continues_from_checkpoint(tmp_path, tiny_cfg_path):
    from training.checkpoint import load_checkpoint
    from training.cli import main

    run = tmp_path / "r"
    base = ["train", str(tiny_cfg_path), "--out", str(run), "--device", "cpu", "--no-progress"]
    assert main([*base, "--epochs", "1"]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["next_epoch"], state["next_step"]) == (2, 0)
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    ev = read_events(run / "events.jsonl")
    starts = [e for e in ev if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from_epoch"] == 2
    assert [e["epoch"] for e in ev if e["event"] == "epoch"] == [1, 2]
    assert load_checkpoint(run / "checkpoint.pt")["next_epoch"] == 3


def test_finetune_writes_new_version_and_leaves_source(
    tmp_path, trained_run, tiny_cfg_path, monkeypatch
):
    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.core.registry import list_models
    from training.cli import main

    monkeypatch.setenv("GRAVITY_MODELS", str(tmp_path / "registry"))
    src = trained_run / "model.safetensors"
    before = _sha(src)
    run = tmp_path / "ft"
    rc = main(
        [
            "train",
            str(tiny_cfg_path),
            "--init",
            str(src),
            "--out",
            str(run),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert _sha(src) == before  # the source model is untouched
    new = run / "model.safetensors"
    assert new.is_file() and _sha(new) != before
    md = read_model_metadata(new)
    parent = md["provenance"]["parent"]
    assert parent["sha256"] == before and parent["path"] == str(src.resolve())
    assert md["provenance"]["config"]["train"]["lr"] == 1e-5  # fine-tuning LR by default
    entries = list_models(include_bundled=False)
    assert [e.label for e in entries] == ["tiny-test:v1"]
    assert _sha(entries[0].path) == _sha(new)
    # a second fine-tune registers v2, v1 stays
    run2 = tmp_path / "ft2"
    assert (
        main(
            [
                "train",
                str(tiny_cfg_path),
                "--init",
                str(src),
                "--out",
                str(run2),
                "--device",
                "cpu",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    labels = [e.label for e in list_models(include_bundled=False)]
    assert labels == ["tiny-test:v1", "tiny-test:v2"]
    assert _sha(entries[0].path) == _sha(new)
