"""The trainer's pieces without running a training: checkpoint round-trip, the epoch's item
plan, mid-epoch resume of ``train_epoch`` on a one-layer model, ``validate_and_keep_best``, and
the typed config's ``--set`` and error locations. Each test runs in well under a second."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt
from training import data as tdata
from training import distributed as tdist
from training import loop
from training.config import ConfigError, load_config, validate_config
from training.events import EventLog, read_events


def _cfg(tmp_path: Path, **train):
    return validate_config(
        {
            "data": {"root": str(tmp_path), "tile_size": 16, "tiles_per_image": 3},
            "train": {"batch_size": 2, "seed": 3, "lr": 0.05, **train},
        },
        source="t.yaml",
    )


class TinyAdapter:
    """One 3×3 convolution; a loss that also draws from the global torch RNG (as dropout would),
    so a resumed epoch matches only if the checkpoint restores the RNG state."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Conv2d(1, 1, 3, padding=1)

    def losses(self, net, images, targets):
        y = net(images + 0.1 * torch.randn_like(images))
        loss = ((y - 1.0) ** 2).mean()
        return {"loss": loss, "cls": loss.detach(), "reg": loss.detach() * 0, "n_pos": None}


class CountingTiles(tdata.TileDataset):
    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.cut: list[tuple[int, int]] = []

    def __getitem__(self, item):
        self.cut.append(item)
        return super().__getitem__(item)


class StopAfter(loop.StopFlag):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.polls, self.n = 0, n

    def is_set(self) -> bool:
        self.polls += 1
        return self.polls >= self.n


def _images(n: int = 2) -> list[tdata.Prepared]:
    rng = np.random.default_rng(1)
    return [
        tdata.Prepared(
            image=rng.random((24, 24)).astype(np.float32),
            points=np.array([[8.0, 9.0]]),
            radii=np.array([2.0]),
            mask=None,
            image_id=f"i{k}",
            patient_id=f"p{k}",
        )
        for k in range(n)
    ]


def _run(tmp_path: Path, cfg, adapter, stop=None, steps: int = 3) -> loop.Run:
    t = cfg.train
    batches = tdata.EpochBatches(t.batch_size)
    generator = torch.Generator()
    ds = CountingTiles(_images(), cfg.data.tile_size, cfg.data.pos_fraction, cfg.data.flips)
    return loop.Run(
        cfg=cfg,
        run_dir=tmp_path,
        dev=torch.device("cpu"),
        dist=tdist.DistInfo(),
        events=EventLog(tmp_path / "events.jsonl"),
        stop=stop or loop.StopFlag(),
        adapter=adapter,
        model=adapter.model,
        net=adapter.model,
        optim=loop.build_optimisation(adapter.model, t),
        amp_ctx=nullcontext(),
        amp_mode=None,
        channels_last=False,
        n_train=2,
        val_imgs=[],
        n_val=0,
        data_description={},
        loader=torch.utils.data.DataLoader(
            ds, batch_sampler=batches, collate_fn=tdata.collate, generator=generator
        ),
        batches=batches,
        generator=generator,
        steps_per_epoch=steps,
        n_epochs=2,
        progress=False,
    )


def test_checkpoint_round_trip_restores_weights_optimiser_schedule_rng(tmp_path):
    cfg = _cfg(tmp_path, optimizer="adamw", weight_decay=0.01)
    a = TinyAdapter()
    optim = loop.build_optimisation(a.model, cfg.train)
    assert isinstance(optim.optimizer, torch.optim.AdamW) and optim.lr == 0.05
    a.model(torch.ones(1, 1, 4, 4)).sum().backward()
    optim.optimizer.step()
    optim.scheduler.step(0.3)
    state = loop.TrainState(
        next_epoch=4,
        next_step=2,
        best_aufroc=0.25,
        best_epoch=3,
        best_threshold=0.6,
        best_curve={"fppi": [0.0, 1.0], "tpr": [0.0, 0.5]},
        no_improve=1,
        history=[{"epoch": 1, "train_loss": 2.5}],
    )
    path = ckpt.save_checkpoint(
        tmp_path / "checkpoint.pt", state.to_checkpoint(a.model, optim, cfg.to_dict())
    )
    after_save = torch.rand(3)  # what the run would have drawn next

    b = TinyAdapter()
    with torch.no_grad():
        b.model.weight.fill_(7.0)
    optim_b = loop.build_optimisation(b.model, cfg.train)
    back = loop.TrainState.from_checkpoint(ckpt.load_checkpoint(path), b.model, optim_b)
    assert back.rng is not None
    rng, back.rng = back.rng, None
    assert back == state  # every field, position and best-so-far
    for k, v in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v)
    sa, sb = optim.optimizer.state_dict(), optim_b.optimizer.state_dict()
    assert sb["param_groups"] == sa["param_groups"]
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(torch.as_tensor(sb["state"][k][name]), torch.as_tensor(v))
    assert optim_b.scheduler.state_dict() == optim.scheduler.state_dict()
    ckpt.set_rng_state(rng)
    assert torch.equal(torch.rand(3), after_save)


def test_sgd_and_adam_are_built_from_the_config(tmp_path):
    model = torch.nn.Linear(2, 1)
    sgd = loop.build_optimisation(model, _cfg(tmp_path, optimizer="sgd", momentum=0.5).train)
    assert isinstance(sgd.optimizer, torch.optim.SGD)
    assert sgd.optimizer.param_groups[0]["momentum"] == 0.5 and sgd.scaler is None
    adam = loop.build_optimisation(model, _cfg(tmp_path, lr_factor=0.5, lr_patience=0).train)
    assert type(adam.optimizer) is torch.optim.Adam
    adam.scheduler.step(0.5)
    adam.scheduler.step(0.4)  # no improvement, patience 0: the LR halves
    assert adam.lr == pytest.approx(0.025)


def test_epoch_plan_and_batches_slice_instead_of_replaying(tmp_path):
    cfg = _cfg(tmp_path)
    whole = loop.epoch_plan(2, cfg, epoch=1, steps_per_epoch=3)
    # 2 images x 3 tiles = 6 items = exactly 3 batches of 2; a resumed epoch drops the first
    assert len(whole) == 6 and sorted(i for i, _ in whole) == [0, 0, 0, 1, 1, 1]
    assert loop.epoch_plan(2, cfg, 1, 3, skip=2) == whole[4:]
    assert loop.epoch_plan(2, cfg, 2, 3) != whole  # another epoch, other tiles
    # more steps than items: the epoch's list is repeated
    assert loop.epoch_plan(2, cfg, 1, 5) == (whole * 2)[:10]
    items = [(k, 100 + k) for k in range(8)]
    one = tdata.EpochBatches(4)
    one.set_items(items)
    assert list(one) == [items[0:4], items[4:8]]
    ranks = [tdata.EpochBatches(4, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_items(items[:7])  # 7 items: the incomplete second batch is dropped
    assert [list(r) for r in ranks] == [[[items[0], items[2]]], [[items[1], items[3]]]]


def test_mid_epoch_resume_matches_the_uninterrupted_epoch(tmp_path):
    cfg = _cfg(tmp_path, checkpoint_every=0)
    whole = _run(tmp_path / "a", cfg, TinyAdapter())
    state = loop.TrainState()
    res = whole.loader.dataset
    out = loop.train_epoch(whole, state, epoch=1)
    assert (out.steps, out.last_step, out.stopped) == (3, 3, False)
    assert len(res.cut) == 6  # each of the 3 batches of 2 tiles cut once

    cut = _run(tmp_path / "b", cfg, TinyAdapter(), stop=StopAfter(1))
    cut_state = loop.TrainState()
    out = loop.train_epoch(cut, cut_state, epoch=1)
    assert out.stopped and (out.steps, out.last_step) == (1, 1)
    saved = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (saved["next_epoch"], saved["next_step"]) == (1, 1)

    again = _run(tmp_path / "b", cfg, TinyAdapter())
    with torch.no_grad():
        again.model.weight.zero_()  # the checkpoint's weights must replace these
    torch.manual_seed(12345)  # and its RNG state this one
    resumed = loop.TrainState.from_checkpoint(saved, again.model, again.optim)
    out = loop.train_epoch(again, resumed, epoch=1)
    assert (out.steps, out.last_step) == (2, 3)
    # only the two unseen batches were cut: the first batch's tiles were not replayed
    assert again.loader.dataset.cut == whole.loader.dataset.cut[2:]
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=1e-7)
    steps = [
        e["step"] for e in read_events(tmp_path / "b" / "events.jsonl") if e["event"] == "step"
    ]
    assert steps == [1, 2, 3]


def test_validate_and_keep_best_updates_state_and_writes_the_best(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    saved: list[tuple[Path, float]] = []

    class Saving(TinyAdapter):
        def detector(self, device):
            return None

        def save(self, path, metadata, threshold, fp16=False):
            saved.append((Path(path), threshold))
            return Path(path)

    run = _run(tmp_path, cfg, Saving())
    run.init_path = None
    aucs = iter([0.4, 0.3, 0.5])

    class Val:
        froc = None

        def __init__(self, auc):
            self.auc = auc

        def summary(self):
            return {"aufroc": self.auc, "sensitivity": {}, "threshold_at_target": self.auc / 2}

    monkeypatch.setattr(loop, "detect_all", lambda *a, **k: [])
    monkeypatch.setattr(loop, "score", lambda *a, **k: Val(next(aucs)))
    monkeypatch.setattr(loop, "git_commit", lambda: None)
    state = loop.TrainState()
    assert loop.validate_and_keep_best(run, state, 1)["aufroc"] == 0.4
    assert (state.best_epoch, state.best_aufroc, state.best_threshold) == (1, 0.4, 0.2)
    loop.validate_and_keep_best(run, state, 2)  # worse: kept, one epoch without improvement
    assert (state.best_epoch, state.no_improve) == (1, 1)
    loop.validate_and_keep_best(run, state, 3)
    assert (state.best_epoch, state.no_improve, state.best_threshold) == (3, 0, 0.25)
    assert saved == [(tmp_path / "best.safetensors", 0.2), (tmp_path / "best.safetensors", 0.25)]
    run.events.close()
    best = [e["epoch"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "best"]
    assert best == [1, 3]


# --------------------------------------------------------------------------- typed config


def test_numeric_train_id_from_set_is_an_id(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(f"data: {{root: {tmp_path}}}\n")
    cfg = load_config(p, ["data.train_ids=[50990001]"])
    assert cfg.data.train_ids == ["50990001"]
    assert load_config(p, ["data.val_ids=[7, 0070]"]).data.val_ids == ["7", "0070"]


def test_bad_value_names_the_file_and_the_key(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(f"data: {{root: {tmp_path}}}\ntrain: {{lr: -0.5}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: train.lr: must be > 0.0, got -0.5"
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.batch_size: must be a whole number"):
        load_config(p, ["train.lr=0.1", "train.batch_size=2.5"])
    from training.cli import main

    assert main(["train", str(p), "--out", str(tmp_path / "r")]) == 1
    assert f"{p}: train.lr: must be > 0.0" in capsys.readouterr().err


def test_typed_config_round_trips_and_validates_assignment(tmp_path):
    cfg = load_config("tiny")
    assert cfg.net.stride == 8 and cfg.train.lr == 1e-3 and cfg.data.synthetic == "mc-tiny"
    again = validate_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict() and again.net == cfg.net
    cfg.train.lr = 2e-4
    assert cfg.to_dict()["train"]["lr"] == 2e-4
    with pytest.raises(ValueError, match="greater than 0"):
        cfg.train.lr = 0.0


def test_net_defaults_and_the_retinanet_net_are_typed(tmp_path):
    from napari_gravity.core.config import GravityConfig
    from training.retinanet import RETINA_DEFAULTS, RetinaNetConfig

    bare = validate_config({"data": {"root": str(tmp_path)}})
    assert bare.net == GravityConfig()  # no net section: the paper's defaults
    retina = validate_config({"model": "retinanet", "data": {"root": str(tmp_path)}})
    assert isinstance(retina.net, RetinaNetConfig)
    assert retina.net.anchor_sizes == (8, 16, 32, 64, 128)
    assert retina.to_dict()["net"] == RETINA_DEFAULTS
    assert validate_config(retina.to_dict()).net == retina.net
    with pytest.raises(ConfigError, match=r"^x\.yaml: net\.anchor_sizes: must be 5"):
        validate_config(
            {"model": "retinanet", "data": {"root": "d"}, "net": {"anchor_sizes": [8]}}, "x.yaml"
        )


def test_export_writes_the_best_weights_with_the_validation_threshold(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, export_fp16=True)
    calls: list[tuple] = []

    class Exporting(TinyAdapter):
        def load_weights(self, path):
            calls.append(("load", Path(path)))

        def save(self, path, metadata, threshold, fp16=False):
            calls.append(("save", Path(path), metadata["metrics"], threshold, fp16))
            return Path(path)

    monkeypatch.setattr(loop, "git_commit", lambda: "abc")
    run = _run(tmp_path, cfg, Exporting())
    state = loop.TrainState(best_aufroc=0.7, best_epoch=2, best_threshold=0.35)
    assert loop.export(run, state, epochs_done=3) is None and calls == []  # no best yet
    (tmp_path / "best.safetensors").write_bytes(b"x")
    assert loop.export(run, state, epochs_done=3) == tmp_path / "model.safetensors"
    metrics = {"val_aufroc": 0.7, "best_epoch": 2, "target_fppi": 1.0}
    assert calls == [
        ("load", tmp_path / "best.safetensors"),
        ("save", tmp_path / "model.safetensors", metrics, 0.35, True),
    ]
    assert run.metadata(3, None)["provenance"]["epochs"] == 3
