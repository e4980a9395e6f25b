"""The review sidecar ``IMG.review.json``: the plugin's autosave of one image's review, and
the files beside it (``IMG.csv`` backups, the model's raw output ``IMG.raw.npz``).

Written atomically (temporary file in the same folder, then ``os.replace``) so a
crash leaves either the previous or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_gravity.fileio import atomic_write, atomic_write_text

from .review import clean_features

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".dcm", ".dicom", ".tif", ".tiff", ".png", ".jpg", ".jpeg")


class SidecarError(ValueError):
    """A review sidecar that cannot be read; the message names the file."""


def image_stem(image_path: str | os.PathLike) -> Path:
    """``/a/IMG.png`` -> ``/a/IMG`` (only a known image suffix is stripped)."""
    p = Path(image_path)
    return p.with_suffix("") if p.suffix.lower() in IMAGE_SUFFIXES else p


def sidecar_path(image_path: str | os.PathLike) -> Path:
    return image_stem(image_path).with_name(image_stem(image_path).name + ".review.json")


def gt_csv_path(image_path: str | os.PathLike) -> Path:
    return image_stem(image_path).with_name(image_stem(image_path).name + ".csv")


def raw_path(image_path: str | os.PathLike) -> Path:
    """``IMG.raw.npz``: the cached raw output of the model that made the review."""
    stem = image_stem(image_path)
    return stem.with_name(stem.name + ".raw.npz")


def backup_file(path: Path) -> Path | None:
    """Copy an existing file to ``NAME.bak-YYYYmmdd-HHMMSS[-n]`` (never overwriting one)."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while dest.exists():
        dest, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    shutil.copy2(path, dest)
    return dest


@dataclass
class Review:
    """One image's review: detections (y, x) with features, and bookkeeping."""

    image: str
    points: np.ndarray
    features: pd.DataFrame
    status: str = "in_progress"
    image_shape: tuple[int, ...] | None = None
    params: dict = field(default_factory=dict)
    detector: dict = field(default_factory=dict)
    saved: float = 0.0


def write_review(path: str | os.PathLike, review: Review) -> Path:
    """Write ``review`` atomically to ``path`` (the sidecar)."""
    feats = clean_features(review.features, len(review.points))
    pts = np.asarray(review.points, dtype=float).reshape(-1, 2)
    rows = [
        {
            "y": float(p[0]),
            "x": float(p[1]),
            "score": float(f.score),
            "source": str(f.source),
            "status": str(f.status),
        }
        for p, f in zip(pts, feats.itertuples(index=False), strict=True)
    ]
    doc = {
        "format_version": FORMAT_VERSION,
        "image": review.image,
        "image_shape": list(review.image_shape) if review.image_shape else None,
        "review_status": review.status,
        "params": review.params,
        "detector": review.detector,
        "saved": time.time(),
        "points": rows,
    }
    atomic_write_text(path, json.dumps(doc, indent=1), fsync=True)
    return Path(path)


def read_review(path: str | os.PathLike) -> Review:
    """Read a sidecar; raises :class:`SidecarError` naming the file when it is malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SidecarError(f"{path}: cannot read review sidecar: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise SidecarError(f"{path}: not a napari-gravity review sidecar (format_version)")
    rows = doc.get("points") or []
    try:
        pts = np.array([[float(r["y"]), float(r["x"])] for r in rows], dtype=float).reshape(-1, 2)
    except (KeyError, TypeError, ValueError) as exc:
        raise SidecarError(f"{path}: bad point entry: {exc}") from exc
    feats = clean_features(pd.DataFrame(rows), len(pts)) if rows else clean_features(None, 0)
    shape = doc.get("image_shape")
    return Review(
        image=str(doc.get("image", "")),
        points=pts,
        features=feats,
        status=str(doc.get("review_status", "in_progress")),
        image_shape=tuple(shape) if shape else None,
        params=dict(doc.get("params") or {}),
        detector=dict(doc.get("detector") or {}),
        saved=float(doc.get("saved", 0.0)),
    )


def read_status(image_path: str | os.PathLike) -> str:
    """Review status of an image from its sidecar (``unreviewed`` when there is none)."""
    p = sidecar_path(image_path)
    if not p.exists():
        return "unreviewed"
    try:
        return read_review(p).status
    except SidecarError:
        return "unreviewed"


def _model_stamp(path) -> list[int]:
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def save_raw(path: str | os.PathLike, raw, detector: dict) -> Path | None:
    """Cache a model's raw output beside the review (atomic), so a reopened image's γ / NMS are
    live without a new Detect. Only the candidates scoring ≥ the raw output's floor are kept."""
    if raw.gravity_points is None or not detector.get("path"):
        return None
    keep = np.asarray(raw.scores) >= raw.floor
    arrays = {
        k: np.asarray(getattr(raw, k), np.float32)[keep]
        for k in ("points", "scores", "gravity_points")
    }
    arrays.update(
        image_shape=np.asarray(raw.image_shape, np.int64),
        floor=np.float64(raw.floor),
        zoom=np.float64(getattr(raw, "zoom", 1.0)),
        detector=np.array(json.dumps({**detector, "stamp": _model_stamp(detector["path"])})),
    )
    if raw.mask is not None:
        arrays["mask"] = np.packbits(np.asarray(raw.mask, bool))

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)
    return Path(path)


def load_raw(path: str | os.PathLike, image_shape=None):
    """A cached raw output (``_api.Candidates``), or None when missing, unreadable or stale (the
    model file changed, or the image has another shape)."""
    from ._api import Candidates

    try:
        with np.load(path, allow_pickle=False) as z:
            det = json.loads(str(z["detector"]))
            shape = tuple(int(v) for v in z["image_shape"])
            mask = None
            if "mask" in z.files:
                mask = np.unpackbits(z["mask"], count=shape[0] * shape[1]).astype(bool)
            raw = Candidates(
                z["points"], z["scores"], shape, None if mask is None else mask.reshape(shape),
                z["gravity_points"], det, float(z["floor"]),
                float(z["zoom"]) if "zoom" in z.files else 1.0,
            )  # fmt: skip
        if image_shape is not None and tuple(image_shape[:2]) != shape:
            return None
        return raw if _model_stamp(det["path"]) == list(det.get("stamp", [])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
