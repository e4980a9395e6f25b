"""Model files: one ``.safetensors`` file holding the weights and everything needed to use them.

The safetensors header's metadata holds ``napari_gravity`` = a JSON object::

    {"format_version": 1, "config": GravityConfig.to_dict(), "threshold": γ,
     "provenance": {"commit", "data", "config", "epochs", "date", "parent"}, ...}

Loading never executes code (safetensors only stores tensors and strings).

:func:`read_model_metadata` is THE metadata reader of the project (the registry, the CLIs and
the GUI use it): it reads only the file's header and never imports torch, so it is cheap in a
GUI thread. ``strict=True`` (default) validates the metadata and raises :class:`ModelFileError`
naming the file; ``strict=False`` never raises and returns ``{}`` for an unreadable file, or the
decoded header metadata of a safetensors file written by something else (e.g. the RetinaNet
comparator), so listing a folder of models never fails. Torch is imported only by
:func:`save_model` / :func:`load_model`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_gravity.fileio import atomic_write

from .config import FOV_DIAMETER_RANGE, GravityConfig

if TYPE_CHECKING:
    import torch

    from .model import GravityNet

FORMAT_VERSION = 1
_META_KEY = "napari_gravity"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass
class LoadedModel:
    model: GravityNet
    config: GravityConfig
    metadata: dict[str, Any]


def save_model(
    path: str | os.PathLike,
    model: GravityNet,
    config: GravityConfig | None = None,
    metadata: dict[str, Any] | None = None,
    half: bool = False,
) -> str:
    """Write ``model`` with its configuration and metadata to ``path`` atomically (temp file in
    the same folder, then ``os.replace``). ``half`` stores floating tensors as float16.
    Returns the path."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    config = config or model.config
    meta = dict(metadata or {})
    meta.pop("format_version", None)
    meta.pop("config", None)
    header = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "threshold": float(meta.pop("threshold", config.threshold)),
        "provenance": meta.pop("provenance", {}),
        **meta,
    }
    try:
        text = json.dumps(header, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: metadata is not JSON-serialisable ({exc})") from exc
    tensors = {}
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        tensors[k] = t.contiguous().clone()
    atomic_write(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={_META_KEY: text, "format": "pt"})
    )
    return path


#: Largest metadata header accepted (bytes): a real one is a few kB.
MAX_HEADER_BYTES = 1 << 20


def _raw_header_metadata(path: str) -> dict[str, str]:
    """The safetensors header's string metadata (``framework="numpy"``: no torch import)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise ModelFileError(path, f"not a readable safetensors model file ({exc})") from exc


def _read_header(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ModelFileError(path, "model file not found")
    if not os.path.isfile(path):
        raise ModelFileError(path, "not a file")
    raw = _raw_header_metadata(path)
    text = raw.get(_META_KEY)
    if text is None:
        raise ModelFileError(path, "a safetensors file without napari-gravity metadata")
    if len(text) > MAX_HEADER_BYTES:
        raise ModelFileError(
            path, f"napari-gravity metadata of {len(text):,} bytes (at most {MAX_HEADER_BYTES:,})"
        )
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(path, f"corrupt napari-gravity metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(path, "corrupt napari-gravity metadata (not an object)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"model format version {_short(version)}; this napari-gravity reads version "
            f"{FORMAT_VERSION}",
        )
    return meta


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _validate_metadata(path: str, meta: dict[str, Any]) -> None:
    """Every value of the metadata that is used: finite numbers in range, right types."""
    for key, lo, hi, text in (
        ("threshold", 0.0, 1.0, "in [0, 1]"),
        ("fov_diameter_px", *FOV_DIAMETER_RANGE, "{:g}-{:g} (px)".format(*FOV_DIAMETER_RANGE)),
    ):
        v = meta.get(key)
        if v is not None and (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or not lo <= v <= hi
        ):
            raise ModelFileError(path, f"metadata key {key!r}: must be {text}, got {_short(v)}")
    for key in ("name", "task", "model"):
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            raise ModelFileError(path, f"metadata key {key!r}: must be a string, got {_short(v)}")
    task = meta.get("task")
    if task is not None and task not in ("mc", "ma"):
        raise ModelFileError(
            path, f"metadata key 'task': must be 'mc', 'ma' or null, got {_short(task)}"
        )
    for key in ("provenance", "metrics"):
        v = meta.get(key)
        if v is not None and not isinstance(v, dict):
            raise ModelFileError(path, f"metadata key {key!r}: must be an object, got {_short(v)}")
    cfg = meta.get("config")
    if isinstance(cfg, dict):
        for key, v in cfg.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ModelFileError(path, f"config key {key!r}: not a finite number ({v})")


def read_model_metadata(path: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """The metadata of a model file (config, threshold, provenance, ...) without the weights
    (and without importing torch).

    ``strict=True``: validated; :class:`ModelFileError` (a ``ValueError``) naming the file when
    it is missing, not a napari-gravity model file, or its metadata is invalid.
    ``strict=False``: never raises; ``{}`` when unreadable; for a safetensors file without valid
    napari-gravity metadata, its header metadata with JSON values decoded."""
    path = os.fspath(path)
    if not strict:
        return _read_metadata_lenient(path)
    meta = _read_header(path)
    _validate_metadata(path, meta)
    try:
        GravityConfig.from_dict(meta.get("config"))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(path, f"invalid configuration ({_short(str(exc), 300)})") from exc
    return meta


def _read_metadata_lenient(path: str) -> dict[str, Any]:
    try:
        return dict(read_model_metadata(path))
    except Exception:
        pass
    try:  # a model file written by something else (e.g. the RetinaNet comparator)
        raw = _raw_header_metadata(path)
    except Exception:
        return {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError, RecursionError):
            out[k] = v
    return out


def _header_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from the safetensors header (no tensor data read)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise ModelFileError(path, f"not a readable safetensors model file ({exc})") from exc


def _expected_shapes(path: str, config: GravityConfig) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of ``GravityNet(config)``, built on the meta device (no memory)."""
    import torch

    from .model import GravityNet

    try:
        with torch.device("meta"):
            net = GravityNet(config)
    except Exception as exc:
        raise ModelFileError(
            path, f"cannot build the network of its configuration ({exc})"
        ) from None
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_shapes(path: str, config: GravityConfig, have: dict, want: dict) -> None:
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = [f"{k} {have[k]} vs {v}" for k, v in want.items() if k in have and have[k] != v]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor shape(s) differ, e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        raise ModelFileError(
            path,
            "the weights do not match the file's configuration "
            f"({config.backbone}, stride {config.stride}, step {config.step}, head_channels "
            f"{config.head_channels}): " + "; ".join(parts),
        )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file: a ``GravityNet`` in eval mode on ``device``, its config and metadata.

    The configuration is checked against the tensor shapes of the file's header BEFORE the
    network is built, so a hostile configuration (``head_channels: 12000``) costs no memory;
    weights holding NaN/inf are refused."""
    import torch
    from safetensors.torch import load_file

    from .model import GravityNet

    path = os.fspath(path)
    meta = read_model_metadata(path)
    config = GravityConfig.from_dict(meta["config"])
    _check_shapes(path, config, _header_shapes(path), _expected_shapes(path, config))
    try:
        tensors = load_file(path, device="cpu")
    except Exception as exc:
        raise ModelFileError(path, f"cannot read the weights ({exc})") from exc
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise ModelFileError(
                path, f"tensor {k!r} holds {n} NaN/inf value(s) of {t.numel()} (a broken model)"
            )
    model = GravityNet(config)
    want = model.state_dict()
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()}, strict=True)
    model.to(device).eval()
    return LoadedModel(model=model, config=config, metadata=meta)
