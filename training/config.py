"""Training configuration: a YAML file validated before anything runs.

A config has five sections, read into a typed :class:`TrainConfig` (pydantic): every key is
optional (defaults below) and an unknown key or a bad value raises :class:`ConfigError` naming the
file and the key, e.g. ``x.yaml: train.lr: must be > 0, got -0.1``. ``--set KEY=VALUE``
overrides apply to the raw mapping before validation.

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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


# --------------------------------------------------------------------------- field types


def _whole(v: Any) -> Any:
    """``5.0`` is the whole number 5 (YAML writes both); anything else is left to the check."""
    return int(v) if isinstance(v, float) and math.isfinite(v) and v.is_integer() else v


def _auto_or_bool(v: Any) -> Any:
    if v == "auto" or isinstance(v, bool):
        return v
    raise ValueError(f"must be one of ['auto', True, False], got {short(v)}")


def _synthetic(v: Any) -> Any:
    if v is None or (isinstance(v, str) and v) or isinstance(v, dict):
        return v
    raise ValueError(f"must be null, a recipe name or a mapping, got {short(v)}")


def _ids_as_strings(v: Any) -> Any:
    """Image ids written as bare numbers (``[50990001]``) are ids: read them as strings."""
    if isinstance(v, list):
        return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
    return v


def _section(v: Any) -> Any:
    return {} if v is None else v  # an empty YAML section (``train:``) is all defaults


Int = Annotated[int, BeforeValidator(_whole)]
Text = Annotated[str, Field(min_length=1)]
AutoBool = Annotated[Literal["auto"] | bool, PlainValidator(_auto_or_bool)]
Synthetic = Annotated[str | dict[str, Any] | None, PlainValidator(_synthetic)]
Ids = Annotated[list[Text] | None, BeforeValidator(_ids_as_strings)]

_ID_KEYS = ("train_ids", "val_ids")


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )


class DataConfig(_Section):
    """Where the images come from, splits and tiles."""

    # a dataset folder read with napari_gravity.data.datasets.open_dataset ...
    root: Text | None = None
    format: Literal["auto", "folder", "inbreast", "eophtha"] = "auto"
    # ... or a synthetic benchmark made with make_benchmark(cache_dir, synthetic) first
    synthetic: Synthetic = None
    cache_dir: Text | None = None  # where a synthetic benchmark is written (default RUN_DIR/data)
    workers: Int = Field(1, ge=1, le=256)  # processes generating the synthetic benchmark
    splits: Text | None = None  # splits JSON (data.splits.load_splits); else made from seed
    fold: Int = Field(0, ge=0)
    val_fraction: float = Field(0.2, gt=0.0, le=0.9)
    train_ids: Ids = None
    val_ids: Ids = None
    max_images: Int | None = Field(None, ge=1)
    tile_size: Int = Field(256, ge=16, le=8192)
    tiles_per_image: Int = Field(4, ge=1, le=100_000)
    pos_fraction: float = Field(0.7, ge=0.0, le=1.0)
    flips: bool = True
    channel: Text = "green"
    use_masks: bool = True
    max_radius: float | None = Field(None, gt=0.0)  # drop bigger lesions (INbreast)


class OptimConfig(_Section):
    """The ``train`` section: optimiser, schedule, epochs, seed, AMP, checkpoints."""

    epochs: Int = Field(50, ge=1, le=100_000)
    batch_size: Int = Field(8, ge=1, le=4096)  # the GLOBAL batch (split over DDP processes)
    lr: float = Field(1e-4, gt=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0.0, le=1.0)  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    lr_factor: float = Field(0.1, gt=0.0, le=1.0)
    lr_patience: Int = Field(3, ge=0)
    min_lr: float = Field(1e-7, ge=0.0)
    warmup_steps: Int = Field(0, ge=0)
    lambda_reg: float = Field(10.0, ge=0.0)
    focal_alpha: float = Field(0.25, ge=0.0, le=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    ignore_gap: float = Field(0.0, ge=0.0)
    early_stopping: Int | None = Field(None, ge=1)  # patience in epochs
    seed: Int = Field(0, ge=0)
    num_workers: Int = Field(0, ge=0, le=256)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: AutoBool = "auto"
    grad_clip: float | None = Field(None, gt=0.0)
    freeze_bn: bool = False  # BatchNorm in eval mode (running stats frozen)
    sync_bn: bool = False  # SyncBatchNorm under DDP on CUDA
    max_steps_per_epoch: Int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(None, gt=0.0)  # stop before exceeding it
    checkpoint_every: Int = Field(0, ge=0)  # steps; 0 = at epoch ends only
    tensorboard: bool = False
    export_fp16: bool = False  # store model.safetensors in float16 (half the size)
    finetune_lr: float = Field(1e-5, gt=0.0)  # used with --init unless --set train.lr
    finetune_epochs: Int = Field(10, ge=1)  # used with --init unless --epochs
    deterministic: bool = False


class EvalConfig(_Section):
    """Validation, FROC and the operating threshold."""

    max_fppi: float = Field(10.0, gt=0.0)  # AUFROC_gamma
    target_fppi: float = Field(1.0, gt=0.0)  # operating threshold chosen here
    # keep this operating threshold instead (e.g. the parent's, when the validation images
    # are the training images and the threshold chosen on them would be optimistic)
    fixed_threshold: float | None = Field(None, ge=0.0, le=1.0)
    every: Int = Field(1, ge=1)
    max_images: Int | None = Field(None, ge=1)
    batch_size: Int = Field(1, ge=1, le=1024)
    min_score: float = Field(0.01, ge=0.0, le=1.0)  # candidates below this are dropped


class LocatedError(ValueError):
    """A value error located below the field it was raised for (``net`` → ``net.step``)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _gravity_net(net: dict[str, Any]) -> Any:
    from napari_gravity.core.config import ConfigFieldError, GravityConfig

    try:
        out = GravityConfig.from_dict(net)
    except ConfigFieldError as exc:
        raise LocatedError(exc.field, exc.detail) from None
    except (TypeError, ValueError) as exc:
        raise LocatedError(None, str(exc).removeprefix("GravityConfig: ")) from None
    if out.head_channels > MAX_HEAD_CHANNELS:
        raise LocatedError(
            "head_channels", f"must be <= {MAX_HEAD_CHANNELS}, got {out.head_channels}"
        )
    return out


def _retina_net(net: dict[str, Any]) -> Any:
    from napari_gravity.core.config import ConfigFieldError
    from training.retinanet import RetinaNetConfig

    try:
        return RetinaNetConfig.from_dict(net)
    except ConfigFieldError as exc:
        raise LocatedError(exc.field, exc.detail) from None
    except (TypeError, ValueError) as exc:
        raise LocatedError(None, str(exc)) from None


class TrainConfig(BaseModel):
    """A validated training config: typed sections, every key filled in.

    ``net`` is a :class:`~napari_gravity.core.config.GravityConfig` (``model: gravitynet``) or
    a :class:`training.retinanet.RetinaNetConfig` (``model: retinanet``)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        validate_assignment=True,
        arbitrary_types_allowed=True,
    )

    model: Literal["gravitynet", "retinanet"] = "gravitynet"
    # what the model detects: "mc" (mammograms: predictions outside the breast mask are
    # ignored by `gravity predict --mask auto`), "ma" (fundus: outside the field of view), or null
    task: Literal["mc", "ma"] | None = None
    name: Text | None = None
    description: Text | None = None
    pretrained: Text | None = None  # a LOCAL torchvision ResNet state-dict file
    net: Any = Field(None, validate_default=True)  # GravityConfig | RetinaNetConfig
    data: Annotated[DataConfig, BeforeValidator(_section)] = Field(default_factory=DataConfig)
    train: Annotated[OptimConfig, BeforeValidator(_section)] = Field(default_factory=OptimConfig)
    eval: Annotated[EvalConfig, BeforeValidator(_section)] = Field(default_factory=EvalConfig)
    _source: str | None = PrivateAttr(None)

    @field_validator("net", mode="plain")
    @classmethod
    def _net(cls, v: Any, info: ValidationInfo) -> Any:
        if hasattr(v, "to_dict"):  # a GravityConfig / RetinaNetConfig
            v = v.to_dict()
        v = {} if v is None else v
        if not isinstance(v, dict):
            raise ValueError(f"must be a mapping, got {short(v)}")
        for key, x in v.items():
            if isinstance(x, float) and not math.isfinite(x):
                raise LocatedError(str(key), f"must be a finite number, got {x!r}")
        model = info.data.get("model")
        if model == "retinanet":
            return _retina_net(dict(v))
        if model == "gravitynet":
            return _gravity_net(dict(v))
        return v  # the model key itself is wrong: reported there

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if self.data.root is None and self.data.synthetic is None:
            raise LocatedError("data.root", "give a dataset folder (data.root) or data.synthetic")
        if self.data.root is not None and self.data.synthetic is not None:
            raise LocatedError(
                "data.synthetic", "give either data.root or data.synthetic, not both"
            )
        return self

    @property
    def source(self) -> str | None:
        """The YAML file it came from (None for a mapping)."""
        return self._source

    def net_dict(self) -> dict[str, Any]:
        """``net`` as a plain mapping (what model files and ``config.yaml`` store)."""
        return self.net.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain data (``config.yaml``, model provenance, checkpoints);
        :func:`validate_config` reads it back unchanged."""
        out = self.model_dump(exclude={"net", "data", "train", "eval"})
        out["net"] = self.net_dict()
        for section in ("data", "train", "eval"):
            out[section] = getattr(self, section).model_dump()
        return out


def _location(err: dict[str, Any]) -> str:
    parts: list[str] = []
    loc = err["loc"][:-1] if err["type"] == "invalid_key" else err["loc"]
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] += f"[{p}]"
        else:
            parts.append(p if isinstance(p, str) else short(p))
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, LocatedError) and exc.key:
        parts.append(exc.key)
    return ".".join(parts)


def _known(loc: tuple) -> str:
    model: type[BaseModel] = TrainConfig
    for p in loc[:-1]:
        ann = model.model_fields[p].annotation if p in model.model_fields else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        model = ann
    names = sorted(model.model_fields)
    if model is TrainConfig:
        return f"known top-level keys: {', '.join(names)}"
    return f"known: {', '.join(names)}"


def _message(err: dict[str, Any]) -> str:
    """One pydantic error in the config's words: ``must be > 0, got -1``."""
    kind, ctx, v = err["type"], err.get("ctx") or {}, err.get("input")
    got = f"got {short(v)}"
    if kind == "value_error":
        exc = ctx.get("error")
        return exc.message if isinstance(exc, LocatedError) else str(exc)
    if kind == "extra_forbidden":
        return f"unknown key; {_known(err['loc'])}"
    if kind == "invalid_key":
        return f"keys must be text, got {short(err['loc'][-1])}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number{' or null' if _nullable(err) else ''}, {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{' or null' if _nullable(err) else ''}, {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {v!r}"
    for name, op in (
        ("greater_than", ">"),
        ("greater_than_equal", ">="),
        ("less_than", "<"),
        ("less_than_equal", "<="),
    ):
        if kind == name:
            bound = next(iter(ctx.values()))
            return f"must be {op} {bound}, got {v!r}"
    if kind == "bool_type":
        return f"must be true or false, {got}"
    if kind in ("string_type", "string_too_short"):
        return f"must be a non-empty string, {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, {got}"
    if kind == "list_type":
        return f"must be a list or null, {got}"
    return f"{err['msg']}, {got}"


def _nullable(err: dict[str, Any]) -> bool:
    loc = err["loc"]
    if len(loc) != 2 or loc[0] not in ("data", "train", "eval"):
        return False
    section = TrainConfig.model_fields[loc[0]].annotation
    field = section.model_fields.get(loc[1]) if isinstance(section, type) else None
    return field is not None and field.default is None


def validate_config(raw: dict[str, Any] | None, source: str | None = None) -> TrainConfig:
    """Check every key and value of a raw config mapping and fill defaults; the first problem
    raises :class:`ConfigError` naming ``source`` and the key (``x.yaml: train.lr: ...``)."""
    where = f"{source}: " if source else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}config must be a mapping, got {type(raw).__name__}")
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _location(err)
        raise ConfigError(_clip(f"{where}{loc + ': ' if loc else ''}{_message(err)}")) from None
    except RecursionError:
        raise ConfigError(f"{where}config nested too deeply") from None
    cfg._source = source
    return cfg


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
