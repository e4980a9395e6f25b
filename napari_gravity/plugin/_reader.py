"""napari reader: images (DICOM / TIFF / PNG / JPEG) and our point files.

Opening ``IMG.png`` also brings its ground truth ``IMG.csv`` and its review sidecar
``IMG.review.json`` when they exist, so a reopened image shows exactly the points and
features that were autosaved. Files that are not ours get ``None``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import _api
from ._session import ROLE_KEY, layer_kwargs
from .review import clean_features
from .sidecar import IMAGE_SUFFIXES, SidecarError, gt_csv_path, read_review, sidecar_path


def get_reader(path):
    """Return a reader function for ``path`` or ``None`` when it is not ours."""
    if isinstance(path, list):
        if not path or not all(get_reader(p) for p in path):
            return None
        return read_many
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".review.json"):
        return None
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return read_path
    if suffix == ".csv" and is_points_csv(p):
        return read_path
    if suffix == ".xml" and is_inbreast_xml(p):
        return read_path
    return None


def _head(path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def is_points_csv(path) -> bool:
    """True for our points CSV (header with ``y`` and ``x`` columns)."""
    header = _head(path, 4096).decode("utf-8", "replace").splitlines()[:1]
    cols = [c.strip().strip('"').lower() for c in (header[0] if header else "").split(",")]
    return "y" in cols and "x" in cols


def is_inbreast_xml(path) -> bool:
    """True for an Apple plist holding an ``Images`` list (INbreast annotations)."""
    head = _head(path, 4096)
    return b"plist" in head.lower() and b"<key>Images</key>" in head


def read_inbreast_xml(path) -> _api.PointTable:
    """The calcifications of an INbreast XML (centre + radius per ROI)."""
    from napari_gravity.data import annotations

    pts, radii, names = annotations.inbreast_calcifications(annotations.read_inbreast_xml(path))
    pts = np.asarray(pts, dtype=float).reshape(-1, 2)
    feats = pd.DataFrame(
        {"roi": list(names)} if len(names) == len(pts) else {}, index=range(len(pts))
    )
    return _api.PointTable(pts, np.asarray(radii, dtype=float).reshape(-1), feats)


def read_many(paths):
    out = []
    for p in paths:
        out.extend(read_path(p))
    return out


def read_path(path):
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return [_points_tuple(_api.read_points_csv(p), p.stem, None)]
    if suffix == ".xml":
        return [_points_tuple(read_inbreast_xml(p), p.stem, None)]
    return image_layers(p)


def _points_tuple(table: _api.PointTable, name: str, image_path: str | None):
    feats = table.features.copy()
    radii = np.where(np.isfinite(table.radii), table.radii, np.nan)
    feats["radius"] = radii
    kwargs = layer_kwargs("gt", name, image_path)
    if image_path is None:
        kwargs["name"] = name
    kwargs["features"] = feats
    return (table.points, kwargs, "points")


def image_layers(path: Path, name: str | None = None) -> list[tuple]:
    """The image layer of ``path`` plus its ground truth and review sidecar when present."""
    from napari_gravity.data.readers import read_image

    rec = read_image(path)
    image = np.asarray(rec.image)
    name = name or path.stem
    spacing = getattr(rec, "spacing", None)
    rec_meta = dict(getattr(rec, "meta", None) or {})
    meta = {
        ROLE_KEY: {"role": "image", "image_path": str(path), "image_meta": rec_meta},
        "path": str(path),
        "spacing": list(spacing) if spacing is not None else None,
    }
    window = dicom_window(rec_meta)
    if window is None:
        window = np.percentile(image, [0.5, 99.8]) if image.size else (0.0, 1.0)
    layers = [
        (
            image,
            {
                "name": name,
                "metadata": meta,
                "colormap": "gray",
                "contrast_limits": _limits(*window),
            },
            "image",
        )
    ]
    gt = gt_csv_path(path)
    if gt.exists() and is_points_csv(gt):
        layers.append(_points_tuple(_api.read_points_csv(gt), name, str(path)))
    layers.extend(review_layers(path, name))
    return layers


def _first(v):
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def dicom_window(meta: dict) -> tuple[float, float] | None:
    """Contrast limits from the file's DICOM window (WindowCenter / WindowWidth, the first when
    several), in the reader's pixel values (rescaled; MONOCHROME1 inverted). None without one."""
    c, w = _first(meta.get("WindowCenter")), _first(meta.get("WindowWidth"))
    if c is None or w is None or w <= 1:
        return None
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2  # DICOM PS3.3 C.11.2.1.2
    if str(meta.get("PhotometricInterpretation", "")).upper().strip() == "MONOCHROME1":
        slope = _first(meta.get("RescaleSlope")) or 1.0
        intercept = _first(meta.get("RescaleIntercept")) or 0.0
        bits = int(_first(meta.get("BitsStored")) or 16)
        signed = int(_first(meta.get("PixelRepresentation")) or 0) == 1
        raw_lo = -(2 ** (bits - 1)) if signed else 0
        raw_hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        a, b = sorted((raw_lo * slope + intercept, raw_hi * slope + intercept))
        lo, hi = (a + b) - hi, (a + b) - lo  # the reader inverted the pixel values
    return lo, hi


def review_layers(path: Path, name: str) -> list[tuple]:
    side = sidecar_path(path)
    if not side.exists():
        return []
    try:
        review = read_review(side)
    except SidecarError:
        return []
    kwargs = layer_kwargs("detections", name, str(path))
    kwargs["metadata"][ROLE_KEY]["review_status"] = review.status
    kwargs["metadata"][ROLE_KEY]["params"] = dict(review.params)
    kwargs["features"] = clean_features(review.features, len(review.points))
    return [(review.points, kwargs, "points")]


def _limits(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
