"""Config validation: every bad key or value is refused before training, naming the key."""

from __future__ import annotations

import pytest
import yaml

from training.config import CONFIG_DIR, ConfigError, load_config, parse_override, validate_config


def _base(tmp_path):
    return {"data": {"root": str(tmp_path)}, "net": {"backbone": "resnet18"}}


def test_bundled_configs_validate():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"inbreast_mc", "eophtha_ma"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.train["epochs"] >= 1
    paper = load_config("inbreast_mc")
    assert (paper.net["backbone"], paper.net["step"], paper.train["batch_size"]) == (
        "resnet34",
        10,
        8,
    )
    assert paper.train["lr"] == pytest.approx(1e-4) and paper.train["epochs"] == 50
    ma = load_config("eophtha_ma")
    assert (ma.net["backbone"], ma.net["step"]) == ("resnet50", 6)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"train": {"lrr": 1e-3}}, "train.lrr"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"data": {"tile_size": "big"}}, "data.tile_size"),
        ({"eval": {"target_fppi": 0}}, "eval.target_fppi"),
        ({"net": {"step": 40}}, "net.step"),
        ({"net": {"colour": 1}}, "colour"),
        ({"modle": "gravitynet"}, "modle"),
        ({"model": "yolo"}, "model"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, patch, key):
    raw = _base(tmp_path)
    for k, v in patch.items():
        if isinstance(v, dict):
            raw.setdefault(k, {}).update(v)
        else:
            raw[k] = v
    with pytest.raises(ConfigError) as e:
        validate_config(raw, source="x.yaml")
    assert key in str(e.value) and "x.yaml" in str(e.value)


def test_overrides_and_cli_error(tmp_path):
    assert parse_override("train.lr=1e-5") == (["train", "lr"], 1e-5)
    assert parse_override("data.flips=false") == (["data", "flips"], False)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_base(tmp_path)))
    cfg = load_config(p, ["train.batch_size=4", "net.step=6"])
    assert cfg.train["batch_size"] == 4 and cfg.net["step"] == 6
    from training.cli import main

    rc = main(["train", str(p), "--out", str(tmp_path / "run"), "--set", "train.bogus=1"])
    assert rc == 1
    assert not (tmp_path / "run" / "events.jsonl").exists()  # refused before training started
