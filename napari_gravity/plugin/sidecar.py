"""The review sidecar ``IMG.review.json``: the plugin's autosave of one image's review.

Written atomically (temporary file in the same folder, then ``os.replace``) so a
crash leaves either the previous or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_gravity.fileio import atomic_write_text

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
