"""Training from Python (a notebook): ``train(config)`` and ``fit(images, points)``.

```python
from training.api import fit, train

model = train("tiny", overrides=["train.epochs=1"], out="runs/tiny")  # bundled name, path,
                                                                      # dict or TrainConfig
model = fit([img0, img1], [pts0, pts1], task="mc", out="runs/fit", epochs=5)
```

Both return the exported ``model.safetensors`` (load it with
``napari_gravity.core.model_io.load_model`` or ``Predictor``); the run folder holds what
``gravity train`` writes (events, metrics, checkpoint, FROC of the best epoch).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config,
    validate_config,
)

#: The bundled recipe ``fit`` starts from, per task (its ``data`` section is replaced).
FIT_BASE = {"mc": "robust_mc_cpu", "ma": "robust_ma_cpu"}
#: ``data`` keys of the base recipe that ``fit`` keeps (tiles); the rest describe its data.
_TILE_KEYS = ("tile_size", "tiles_per_image", "pos_fraction", "flips", "channel", "use_masks")


def _resolve(config: TrainConfig | Mapping | str | os.PathLike, overrides: list[str] | None):
    if isinstance(config, TrainConfig):
        raw, source = config.to_dict(), config.source
    elif isinstance(config, Mapping):
        raw, source = copy.deepcopy(dict(config)), None
    else:
        return load_config(config, overrides)
    return validate_config(apply_overrides(raw, overrides, source), source=source)


def _run_dir(cfg: TrainConfig, out: str | os.PathLike | None) -> Path:
    if out is not None:
        return Path(out)
    return Path("runs") / f"{cfg.name or 'model'}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
    out: str | os.PathLike[str] | None = None,
    init: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> Path:
    """Train from a config (a :class:`TrainConfig`, a mapping of its sections, a YAML path or a
    bundled config name) and return the exported model file.

    ``overrides`` are ``--set`` strings (``"train.lr=1e-4"``) applied before validation;
    ``out`` is the run folder (default ``runs/NAME-DATE-TIME``; an existing run is refused);
    ``init`` fine-tunes a model file or registry name (lr ``train.finetune_lr`` unless
    ``train.lr`` is overridden). Errors: :class:`ConfigError` (names the key),
    :class:`training.loop.TrainingError`."""
    from training.loop import TrainingError
    from training.loop import train as run_training

    cfg = _resolve(config, overrides)
    run_dir = _run_dir(cfg, out)
    if (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"out {run_dir} already holds a run (checkpoint.pt); choose another")
    if init is not None:
        from napari_gravity.core.registry import resolve_model

        init = resolve_model(init)
        if not any(o.split("=", 1)[0].strip() == "train.lr" for o in overrides or []):
            cfg.train.lr = cfg.train.finetune_lr
    res = run_training(cfg, run_dir, init=init, device=device, progress=progress)
    if res.model_path is None:
        raise TrainingError(f"{run_dir}: the run stopped before any validation; no model")
    return res.model_path


def _write_folder(out: Path, images: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> Path:
    """``imgNNN.tif`` (float32, lossless) + ``imgNNN.csv`` (``y,x,radius``): the generic folder
    layout :func:`napari_gravity.data.datasets.open_dataset` reads."""
    import tifffile

    from napari_gravity.data.annotations import DEFAULT_RADIUS, write_points_csv
    from napari_gravity.fileio import atomic_write

    if len(images) != len(points):
        raise ValueError(f"fit: {len(images)} images but {len(points)} point arrays")
    out.mkdir(parents=True, exist_ok=True)
    for k, (img, pts) in enumerate(zip(images, points, strict=True)):
        img = np.asarray(img)
        if img.ndim != 2:
            raise ValueError(f"fit: image {k} has shape {img.shape}; give 2-D gray images")
        pts = np.asarray(pts, dtype=np.float64).reshape(len(pts), -1)
        if pts.shape[1] not in (2, 3):
            raise ValueError(f"fit: points {k} must be (n, 2) y, x or (n, 3) y, x, radius")
        radii = pts[:, 2] if pts.shape[1] == 3 else np.full(len(pts), DEFAULT_RADIUS)
        f32 = img.astype(np.float32)
        atomic_write(out / f"img{k:03d}.tif", lambda tmp, f32=f32: tifffile.imwrite(tmp, f32))
        write_points_csv(out / f"img{k:03d}.csv", pts[:, :2], radii)
    return out


def fit(
    images: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    *,
    task: str = "mc",
    out: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    progress: bool = True,
    init: str | os.PathLike[str] | None = None,
    device: str = "auto",
    **overrides: Any,
) -> Path:
    """Train on in-memory images (2-D arrays) and their lesions (per image an ``(n, 2)`` array
    of ``y, x`` or ``(n, 3)`` with a radius); returns the exported model file.

    The recipe is the bundled CPU one of ``task`` (``"mc"``: robust_mc_cpu, ``"ma"``:
    robust_ma_cpu) with its data replaced by the arrays, written to ``OUT/data`` as a generic
    folder. Keyword overrides are ``section__key=value`` (``train__lr=1e-3``,
    ``net__head_channels=32``, ``data__tile_size=64``); ``epochs`` sets ``train.epochs``.
    Validation images are a seeded ``data.val_fraction`` of the images (with a single image,
    the training image itself)."""
    if task not in FIT_BASE:
        raise ValueError(f"fit: task must be one of {sorted(FIT_BASE)}, got {task!r}")
    raw = load_config(FIT_BASE[task]).to_dict()
    raw["name"] = raw["description"] = None
    keep = {k: raw["data"][k] for k in _TILE_KEYS}
    raw["data"] = {"format": "folder", **keep}
    raw["train"]["time_budget_s"] = None
    raw["eval"]["max_images"] = None
    if epochs is not None:
        raw["train"]["epochs"] = epochs
    for key, value in overrides.items():
        section, sep, name = key.partition("__")
        if not sep or not name:
            raise ConfigError(f"fit: override {key!r}: write section__key, e.g. train__lr")
        if not isinstance(raw.get(section), dict):
            raise ConfigError(f"fit: override {key!r}: {section!r} is not a config section")
        raw[section][name] = value
    run_dir = _run_dir(validate_config({**raw, "data": {**raw["data"], "root": "."}}), out)
    raw["name"] = run_dir.name
    raw["data"]["root"] = str(_write_folder(run_dir / "data", images, points))
    return train(raw, progress=progress, out=run_dir, init=init, device=device)
