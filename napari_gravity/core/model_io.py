"""Model files: one ``.safetensors`` file holding the weights and everything needed to use them.

The safetensors header's metadata holds ``napari_gravity`` = a JSON object::

    {"format_version": 1, "config": GravityConfig.to_dict(), "threshold": γ,
     "provenance": {"commit", "data", "config", "epochs", "date", "parent"}, ...}

Loading never executes code (safetensors only stores tensors and strings).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from napari_gravity.fileio import atomic_write

from .config import GravityConfig
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


def _read_header(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ModelFileError(path, "model file not found")
    if not os.path.isfile(path):
        raise ModelFileError(path, "not a file")
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise ModelFileError(path, f"not a readable safetensors model file ({exc})") from exc
    text = raw.get(_META_KEY)
    if text is None:
        raise ModelFileError(path, "a safetensors file without napari-gravity metadata")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, f"corrupt napari-gravity metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(path, "corrupt napari-gravity metadata (not an object)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"model format version {version!r}; this napari-gravity reads version {FORMAT_VERSION}",
        )
    return meta


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model file (config, threshold, provenance, ...) without the weights."""
    path = os.fspath(path)
    meta = _read_header(path)
    try:
        GravityConfig.from_dict(meta.get("config"))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"invalid configuration ({exc})") from exc
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file: a ``GravityNet`` in eval mode on ``device``, its config and metadata."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    meta = read_model_metadata(path)
    config = GravityConfig.from_dict(meta["config"])
    try:
        tensors = load_file(path, device="cpu")
    except Exception as exc:
        raise ModelFileError(path, f"cannot read the weights ({exc})") from exc
    model = GravityNet(config)
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    wrong = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in want.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
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
            f"({config.backbone}, stride {config.stride}, step {config.step}): " + "; ".join(parts),
        )
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()}, strict=True)
    model.to(device).eval()
    return LoadedModel(model=model, config=config, metadata=meta)
