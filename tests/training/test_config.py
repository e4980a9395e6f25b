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
        assert cfg.train.epochs >= 1
    paper = load_config("inbreast_mc")
    assert (paper.net.backbone, paper.net.step, paper.train.batch_size) == (
        "resnet34",
        10,
        8,
    )
    assert paper.train.lr == pytest.approx(1e-4) and paper.train.epochs == 50
    ma = load_config("eophtha_ma")
    assert (ma.net.backbone, ma.net.step) == ("resnet50", 6)


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
    assert cfg.train.batch_size == 4 and cfg.net.step == 6
    from training.cli import main

    rc = main(["train", str(p), "--out", str(tmp_path / "run"), "--set", "train.bogus=1"])
    assert rc == 1
    assert not (tmp_path / "run" / "events.jsonl").exists()  # refused before training started


# --------------------------------------------------------------------------- issue 13
def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    import tracemalloc

    # the anchors live inside a valid key, so validation reaches the value (old code: > 4 GB)
    levels = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        levels.append(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    p = _write(tmp_path, f"data: {{root: {tmp_path}}}\ndescription: [{', '.join(levels)}]\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"c\.yaml: .*aliases .*not allowed") as info:
            load_config(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # refused at the first alias: memory (not wall time) shows nothing was expanded
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated"
    assert "*a0" in str(info.value) and len(str(info.value)) < 700


def test_long_values_are_truncated_in_messages(tmp_path):
    p = _write(
        tmp_path, "data: {root: x}\ndescription: [" + ", ".join(["1234567890"] * 20000) + "]\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml: description: must be a non-empty string") as e:
        load_config(p)
    assert len(str(e.value)) < 700
    big = _write(tmp_path, "# " + "x" * (2 << 20) + "\n", "big.yaml")
    with pytest.raises(ConfigError, match=r"big\.yaml: a config of .* bytes"):
        load_config(big)
    deep = _write(tmp_path, "data: " + "[" * 50000 + "]" * 50000 + "\n", "deep.yaml")
    with pytest.raises(ConfigError, match=r"deep\.yaml"):
        load_config(deep)


def test_top_level_list_with_set_is_a_clear_error(tmp_path):
    p = _write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(
        ConfigError, match=r"c\.yaml: a config must be a mapping .*got a list; --set"
    ):
        load_config(p, ["train.lr=1e-5"])
    with pytest.raises(ConfigError, match=r"c\.yaml: a config must be a mapping .*got a list$"):
        load_config(p)


def test_numeric_looking_ids_are_ids(tmp_path):
    p = _write(tmp_path, f"data: {{root: {tmp_path}}}\n")
    cfg = load_config(p, ["data.train_ids=[50990001, 007]", "data.val_ids=22678622"])
    assert cfg.data.train_ids == ["50990001", "007"]
    assert cfg.data.val_ids == ["22678622"]
    q = _write(
        tmp_path, f"data: {{root: {tmp_path}, train_ids: [50990001], val_ids: null}}\n", "q.yaml"
    )
    assert load_config(q).data.train_ids == ["50990001"]


@pytest.mark.parametrize(
    "text, key",
    [
        ("train: {lr: .nan}", "train.lr: must be a finite number, got nan"),
        ("train: {lr: .inf}", "train.lr: must be a finite number, got inf"),
        ("train: {grad_clip: .nan}", "train.grad_clip: must be a finite number"),
        ("eval: {max_fppi: -.inf}", "eval.max_fppi: must be a finite number"),
        ("net: {nms_box: .nan}", "net.nms_box: must be a finite number"),
        ("net: {threshold: .nan}", "net.threshold: must be a finite number"),
    ],
)
def test_non_finite_values_name_file_and_key(tmp_path, text, key):
    p = _write(tmp_path, f"data: {{root: {tmp_path}}}\n{text}\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: {key}"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"train.lr: must be a finite number"):
        load_config(_write(tmp_path, f"data: {{root: {tmp_path}}}\n", "d.yaml"), ["train.lr=.nan"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("net: {head_channels: 1000000000}", "net.head_channels: must be <= 4096"),
        ("tile_size: 1000000000", "data.tile_size: must be <= 8192"),
        ("train: {batch_size: 100000000}", "train.batch_size: must be <= 4096"),
    ],
)
def test_sizes_that_would_exhaust_memory_are_refused(tmp_path, text, key):
    if text.startswith("tile_size"):
        p = _write(tmp_path, f"data: {{root: {tmp_path}, {text}}}\n")
    else:
        p = _write(tmp_path, f"data: {{root: {tmp_path}}}\n{text}\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: {key}"):
        load_config(p)


def test_duplicated_yaml_keys_are_refused(tmp_path):
    p = _write(tmp_path, f"data: {{root: {tmp_path}}}\ntrain: {{lr: 0.1}}\ntrain: {{epochs: 3}}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: .*duplicated key 'train' \(line 3\)"):
        load_config(p)
    q = _write(tmp_path, f"data: {{root: {tmp_path}}}\ntrain: {{lr: 0.1, lr: 0.2}}\n", "q.yaml")
    with pytest.raises(ConfigError, match=r"q\.yaml: .*duplicated key 'lr'"):
        load_config(q)
