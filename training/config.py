"""Training configuration: a YAML file validated before anything runs.

A config has five sections; every key is optional (defaults below) and an unknown key or a bad
value raises :class:`ConfigError` naming the key, e.g. ``train.lr: must be > 0, got -1``.

```yaml
model: gravitynet          # or: retinanet (the anchor-based comparator)
net: {backbone: resnet34, step: 10, ...}   # GravityConfig keys (napari_gravity.core.config)
pretrained: null           # a LOCAL torchvision ResNet state-dict file; null = from scratch
data: {...}                # where the images come from, splits, tiles
train: {...}               # optimiser, schedule, epochs, seed, AMP, ...
eval: {...}                # validation / FROC / operating threshold
```
"""

from __future__ import annotations

import copy
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A training config is invalid; the message names the file (if any) and the key."""


#: Largest config file read (bytes); a real one is a few kB.
MAX_CONFIG_BYTES = 1 << 20
#: Widest detection head accepted from a config (the paper uses 256).
MAX_HEAD_CHANNELS = 4096
#: Longest error message (characters): values from a hostile file are shortened.
MAX_MESSAGE = 600

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxtuple = 2, 5, 5, 5
_repr.maxstring, _repr.maxother, _repr.maxlong = 60, 60, 40


def short(v: Any) -> str:
    """A bounded ``repr`` of a value for error messages (never expands a huge structure)."""
    return _repr.repr(v)


def _clip(text: str, n: int = MAX_MESSAGE) -> str:
    return text if len(text) <= n else text[: n - 5] + " ..."


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses YAML aliases (``*name``): a few lines of aliases can expand
    to billions of values (the "billion laughs" bomb); configs never need them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"YAML aliases (*{short(event.anchor)[1:-1]}) are not allowed in configs "
                f"(line {event.start_mark.line + 1}); write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: reported by the base class
            if dup:
                raise yaml.YAMLError(
                    f"duplicated key {short(key)} (line {key_node.start_mark.line + 1}): YAML "
                    "would silently keep only the last one"
                )
        return super().construct_mapping(node, deep=deep)


def safe_yaml_load(text: str, where: str) -> Any:
    """Parse YAML text without aliases; errors become :class:`ConfigError` naming ``where``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_clip(f"{where}: not valid YAML: {exc}")) from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None


_ANY = object()

# key -> (default, checker) per section. A checker returns an error string or None.


def _num(
    lo: float | None = None,
    hi: float | None = None,
    *,
    open_lo: bool = False,
    integer: bool = False,
    none: bool = False,
):
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return (
                f"must be a {'whole ' if integer else ''}number{' or null' if none else ''}, "
                f"got {short(v)}"
            )
        if not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if integer and float(v) != int(v):
            return f"must be a whole number, got {v!r}"
        if lo is not None and (v <= lo if open_lo else v < lo):
            return f"must be {'>' if open_lo else '>='} {lo}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v!r}"
        return None

    return check


def _choice(*options: Any):
    def check(v: Any) -> str | None:
        try:
            ok = any(v == o and type(v) is type(o) for o in options)
        except Exception:
            ok = False
        return None if ok else f"must be one of {list(options)}, got {short(v)}"

    return check


def _str(none: bool = True):
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        return None if isinstance(v, str) and v else f"must be a non-empty string, got {short(v)}"

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {short(v)}"


def _synthetic(v: Any) -> str | None:
    if v is None or (isinstance(v, str) and v) or isinstance(v, dict):
        return None
    return f"must be null, a recipe name or a mapping, got {short(v)}"


def _list_of_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list) and all(isinstance(s, str) and s for s in v):
        return None
    return f"must be a list of image ids (strings) or null, got {short(v)}"


def _ids_as_strings(v: Any) -> Any:
    """Image ids written as bare numbers (``[50990001]``) are ids: read them as strings."""
    if isinstance(v, list):
        return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
    return v


_ID_KEYS = ("train_ids", "val_ids")


SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "data": {
        # A dataset folder read with napari_gravity.data.datasets.open_dataset ...
        "root": (None, _str()),
        "format": ("auto", _choice("auto", "folder", "inbreast", "eophtha")),
        # ... or a synthetic benchmark made with make_benchmark(cache_dir, synthetic) first.
        "synthetic": (None, _synthetic),
        "cache_dir": (
            None,
            _str(),
        ),  # where a synthetic benchmark is written (default RUN_DIR/data)
        "workers": (1, _num(1, 256, integer=True)),  # processes generating the synthetic benchmark
        "splits": (None, _str()),  # splits JSON (data.splits.load_splits); else made from seed
        "fold": (0, _num(0, integer=True)),
        "val_fraction": (0.2, _num(0.0, 0.9, open_lo=True)),
        "train_ids": (None, _list_of_str),
        "val_ids": (None, _list_of_str),
        "max_images": (None, _num(1, integer=True, none=True)),
        "tile_size": (256, _num(16, 8192, integer=True)),
        "tiles_per_image": (4, _num(1, 100_000, integer=True)),
        "pos_fraction": (0.7, _num(0.0, 1.0)),
        "flips": (True, _bool),
        "channel": ("green", _str(none=False)),
        "use_masks": (True, _bool),
        "max_radius": (None, _num(0.0, open_lo=True, none=True)),  # drop bigger lesions
    },
    "train": {
        "epochs": (50, _num(1, 100_000, integer=True)),
        "batch_size": (8, _num(1, 4096, integer=True)),
        "lr": (1e-4, _num(0.0, open_lo=True)),
        "optimizer": ("adam", _choice("adam", "adamw", "sgd")),
        "momentum": (0.9, _num(0.0, 1.0)),  # sgd only
        "weight_decay": (0.0, _num(0.0)),
        "lr_factor": (0.1, _num(0.0, 1.0, open_lo=True)),
        "lr_patience": (3, _num(0, integer=True)),
        "min_lr": (1e-7, _num(0.0)),
        "warmup_steps": (0, _num(0, integer=True)),
        "lambda_reg": (10.0, _num(0.0)),
        "focal_alpha": (0.25, _num(0.0, 1.0)),
        "focal_gamma": (2.0, _num(0.0)),
        "ignore_gap": (0.0, _num(0.0)),
        "early_stopping": (None, _num(1, integer=True, none=True)),  # patience in epochs
        "seed": (0, _num(0, integer=True)),
        "num_workers": (0, _num(0, 256, integer=True)),
        "amp": ("auto", _choice("auto", "off", "bf16", "fp16")),
        "channels_last": ("auto", _choice("auto", True, False)),
        "grad_clip": (None, _num(0.0, open_lo=True, none=True)),
        "freeze_bn": (False, _bool),  # BatchNorm in eval mode (running stats frozen)
        "sync_bn": (False, _bool),  # SyncBatchNorm under DDP on CUDA
        "max_steps_per_epoch": (None, _num(1, integer=True, none=True)),
        "time_budget_s": (None, _num(0.0, open_lo=True, none=True)),  # stop before exceeding it
        "checkpoint_every": (0, _num(0, integer=True)),  # steps; 0 = at epoch ends only
        "tensorboard": (False, _bool),
        "export_fp16": (False, _bool),  # store model.safetensors in float16 (half the size)
        "finetune_lr": (1e-5, _num(0.0, open_lo=True)),  # used with --init unless --set train.lr
        "finetune_epochs": (10, _num(1, integer=True)),  # used with --init unless --epochs
        "deterministic": (False, _bool),
    },
    "eval": {
        "max_fppi": (10.0, _num(0.0, open_lo=True)),  # AUFROC_gamma
        "target_fppi": (1.0, _num(0.0, open_lo=True)),  # operating threshold chosen here
        # keep this operating threshold instead (e.g. the parent's, when the validation images
        # are the training images and the threshold chosen on them would be optimistic)
        "fixed_threshold": (None, _num(0.0, 1.0, none=True)),
        "every": (1, _num(1, integer=True)),
        "max_images": (None, _num(1, integer=True, none=True)),
        "batch_size": (1, _num(1, 1024, integer=True)),
        "min_score": (0.01, _num(0.0, 1.0)),  # candidates below this are dropped before FROC
    },
}

TOP_LEVEL: dict[str, tuple[Any, Any]] = {
    "model": ("gravitynet", _choice("gravitynet", "retinanet")),
    "pretrained": (None, _str()),
    "name": (None, _str()),
    "description": (None, _str()),
    # what the model detects: "mc" (mammograms: predictions outside the breast mask are
    # ignored by `gravity predict --mask auto`), "ma" (fundus: outside the field of view), or null
    "task": (None, _choice(None, "mc", "ma")),
}


@dataclass
class TrainConfig:
    """A validated training config (plain dicts per section, every key filled in)."""

    model: str
    net: dict[str, Any]
    pretrained: str | None
    data: dict[str, Any]
    train: dict[str, Any]
    eval: dict[str, Any]
    name: str | None = None
    description: str | None = None
    task: str | None = None
    source: str | None = None  # the YAML file it came from

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "name": self.name,
            "description": self.description,
            "pretrained": self.pretrained,
            "net": copy.deepcopy(self.net),
            "data": copy.deepcopy(self.data),
            "train": copy.deepcopy(self.train),
            "eval": copy.deepcopy(self.eval),
        }

    def gravity_config(self):
        """The network's :class:`~napari_gravity.core.config.GravityConfig`."""
        from napari_gravity.core.config import GravityConfig

        return GravityConfig.from_dict(self.net)


def _err(where: str, key: str, msg: str) -> ConfigError:
    return ConfigError(_clip(f"{where}{short(key) if not isinstance(key, str) else key}: {msg}"))


def validate_config(raw: dict[str, Any], source: str | None = None) -> TrainConfig:
    """Check every key and value of a raw config mapping; fill defaults."""
    where = f"{source}: " if source else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}config must be a mapping, got {type(raw).__name__}")
    known = set(TOP_LEVEL) | set(SCHEMA) | {"net"}
    for key in raw:
        if key not in known:
            raise _err(
                where, short(key), f"unknown key; known top-level keys: {', '.join(sorted(known))}"
            )
    out: dict[str, Any] = {}
    for key, (default, check) in TOP_LEVEL.items():
        v = raw.get(key, default)
        msg = check(v)
        if msg:
            raise _err(where, key, msg)
        out[key] = v
    for section, spec in SCHEMA.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise _err(where, section, f"must be a mapping, got {short(given)}")
        vals: dict[str, Any] = {}
        for key in given:
            if key not in spec:
                raise _err(
                    where,
                    f"{section}.{short(key)[1:-1] if isinstance(key, str) else short(key)}",
                    f"unknown key; known: {', '.join(sorted(spec))}",
                )
        for key, (default, check) in spec.items():
            v = given.get(key, default)
            if key in _ID_KEYS:
                v = _ids_as_strings(v)
            msg = check(v)
            if msg:
                raise _err(where, f"{section}.{key}", msg)
            if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            vals[key] = v
        out[section] = vals
    net = raw.get("net") or {}
    if not isinstance(net, dict):
        raise _err(where, "net", f"must be a mapping, got {short(net)}")
    for key, v in net.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise _err(where, f"net.{short(key)[1:-1]}", f"must be a finite number, got {v!r}")
    net = dict(net)
    if out["model"] == "gravitynet":
        try:
            from napari_gravity.core.config import GravityConfig

            net = GravityConfig.from_dict(net).to_dict()
            if net["head_channels"] > MAX_HEAD_CHANNELS:
                raise ValueError(
                    f"net.head_channels: must be <= {MAX_HEAD_CHANNELS}, got {net['head_channels']}"
                )
        except ValueError as exc:  # GravityConfig names the field; say it is under net.
            text = str(exc).replace("GravityConfig.", "net.").replace("GravityConfig:", "net:")
            raise ConfigError(_clip(f"{where}{text}")) from None
    else:
        from training.retinanet import validate_retinanet_net

        try:
            net = validate_retinanet_net(net)
        except ValueError as exc:
            raise ConfigError(_clip(f"{where}{exc}")) from None
    d = out["data"]
    if d["root"] is None and d["synthetic"] is None:
        raise _err(where, "data.root", "give a dataset folder (data.root) or data.synthetic")
    if d["root"] is not None and d["synthetic"] is not None:
        raise _err(where, "data.synthetic", "give either data.root or data.synthetic, not both")
    return TrainConfig(
        model=out["model"],
        net=net,
        pretrained=out["pretrained"],
        data=out["data"],
        train=out["train"],
        eval=out["eval"],
        name=out["name"],
        description=out["description"],
        task=out["task"],
        source=source,
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-5"`` → (["train", "lr"], 1e-5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-5")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    if parts[-1] in _ID_KEYS and value.strip():
        # ids stay text exactly as typed (50990001, 007): every scalar is read as a string
        try:
            parsed = yaml.load(value, Loader=yaml.BaseLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(_clip(f"--set {text!r}: cannot parse the value: {exc}")) from None
        if isinstance(parsed, str) and parsed.lower() in ("null", "~", ""):
            parsed = None
        elif isinstance(parsed, str):
            parsed = [parsed]
        return parts, parsed
    parsed = safe_yaml_load(value, f"--set {_clip(text, 80)!r}") if value.strip() else None
    if isinstance(parsed, str):  # YAML reads 1e-5 as a string; numbers the user meant
        try:
            parsed = float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            pass
    return parts, parsed


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | None, source: str | None = None
) -> dict[str, Any]:
    if raw is not None and not isinstance(raw, dict):
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}a config must be a mapping of sections (model, net, data, train, eval), "
            f"got a {type(raw).__name__}" + ("; --set cannot apply to it" if overrides else "")
        )
    raw = copy.deepcopy(raw) if raw else {}
    for text in overrides or []:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(_clip(f"--set {text!r}: {p} is not a section"))
            node = nxt
        node[parts[-1]] = value
    return raw


def resolve_config_path(path: str | Path) -> Path:
    """A path, or the name of a bundled config (``tiny`` → training/configs/tiny.yaml)."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.exists():
            return cand
    raise FileNotFoundError(
        f"config {str(path)!r} not found (bundled configs: "
        f"{', '.join(sorted(c.stem for c in CONFIG_DIR.glob('*.yaml')))})"
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a YAML config (a path or a bundled config name)."""
    p = resolve_config_path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: a config of {size:,} bytes (at most {MAX_CONFIG_BYTES:,}); not a config?"
            )
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from None
    raw = safe_yaml_load(text, str(p))
    raw = apply_overrides(raw if raw is not None else {}, overrides, str(p))
    return validate_config(raw, source=str(p))
