"""Predictions and ground-truth CSV files for evaluation.

* predictions: ``image,y,x,score`` — one row per detection; a row with only ``image`` (empty
  ``y,x,score``) declares an image that was processed and has no detection.
* ground truth: ``image,y,x,radius`` — one row per lesion; a row with only ``image`` declares a
  lesion-free image. ``radius`` may be absent when matching uses a fixed distance.

Extra columns are ignored. Errors raise :class:`CSVFormatError` naming the file and line.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from napari_gravity.fileio import atomic_write_text
from napari_gravity.types import Detections, Sample


class CSVFormatError(ValueError):
    """A malformed evaluation CSV; the message names the file and the line."""


class DuplicateRowsWarning(UserWarning):
    """Ground-truth rows repeating a lesion (same image and centre); the message names the file
    and the lines. The repeats are dropped (a lesion counted twice caps the sensitivity)."""


def _open_rows(path: str | os.PathLike, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CSVFormatError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    try:
        yield from _rows(path, text, required, optional)
    except csv.Error as exc:  # NUL bytes, a field over the csv module's limit, ...
        raise CSVFormatError(f"{path}: not a readable CSV ({exc})") from None


def _rows(path: Path, text: str, required: tuple[str, ...], optional: tuple[str, ...]):
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise CSVFormatError(
            f"{path}: empty file (expected a header {','.join(required)})"
        ) from None
    cols = [h.strip().lower() for h in header]
    dup = sorted({c for c in cols if c and cols.count(c) > 1})
    if dup:
        raise CSVFormatError(
            f"{path}, line 1: duplicated column(s) {', '.join(repr(c) for c in dup)} in the header "
            f"{','.join(header)[:200]!r}"
        )
    missing = [c for c in required if c not in cols]
    if missing:
        raise CSVFormatError(
            f"{path}, line 1: missing column(s) {', '.join(missing)}; header is "
            f"{','.join(header)[:200]!r}, expected {','.join(required + optional)}"
        )
    index = {c: cols.index(c) for c in (*required, *optional) if c in cols}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) < len(cols):
            row = row + [""] * (len(cols) - len(row))
        yield path, lineno, {c: row[i].strip() for c, i in index.items()}


def _num(path: Path, lineno: int, name: str, value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise CSVFormatError(
            f"{path}, line {lineno}: {name} {value[:40]!r} is not a number"
        ) from None
    if not math.isfinite(v):
        raise CSVFormatError(f"{path}, line {lineno}: {name} must be finite, got {value[:40]!r}")
    return v


def _row_values(path: Path, lineno: int, row: dict[str, str], names: tuple[str, ...]):
    if not row["image"]:
        raise CSVFormatError(f"{path}, line {lineno}: empty image id")
    present = [n for n in names if row.get(n, "")]
    if not present:
        return None  # image declared without points
    if len(present) != len([n for n in names if n in row]):
        absent = [n for n in names if n in row and not row[n]]
        raise CSVFormatError(f"{path}, line {lineno}: missing value for {', '.join(absent)}")
    return [_num(path, lineno, n, row[n]) for n in names if n in row]


def read_predictions_csv(path: str | os.PathLike) -> dict[str, Detections]:
    """Read ``image,y,x,score`` rows into {image_id: Detections} (file order kept)."""
    pts: dict[str, list[tuple[float, float]]] = {}
    scs: dict[str, list[float]] = {}
    for p, lineno, row in _open_rows(path, ("image", "y", "x", "score")):
        vals = _row_values(p, lineno, row, ("y", "x", "score"))
        pts.setdefault(row["image"], [])
        scs.setdefault(row["image"], [])
        if vals is not None:
            pts[row["image"]].append((vals[0], vals[1]))
            scs[row["image"]].append(vals[2])
    return {k: Detections(np.asarray(pts[k]).reshape(-1, 2), np.asarray(scs[k])) for k in pts}


def read_ground_truth_csv(
    path: str | os.PathLike, *, duplicates: str = "warn"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``image,y,x[,radius]`` rows into {image_id: (points (N,2), radii (N,))}.

    Without a radius column the radii are NaN (use a fixed matching distance then). A row
    repeating a lesion (same image, same y and x to 0.001 px) would count it twice:
    ``duplicates="warn"`` (default) drops the repeats with a :class:`DuplicateRowsWarning`
    naming the lines, ``"error"`` raises :class:`CSVFormatError`, ``"keep"`` keeps them.
    """
    if duplicates not in ("warn", "error", "keep"):
        raise ValueError(f"duplicates must be 'warn', 'error' or 'keep', got {duplicates!r}")
    pts: dict[str, list[tuple[float, float]]] = {}
    rad: dict[str, list[float]] = {}
    seen: dict[tuple[str, float, float], int] = {}
    repeats: list[tuple[int, int, str]] = []
    for p, lineno, row in _open_rows(path, ("image", "y", "x"), ("radius",)):
        vals = _row_values(p, lineno, row, ("y", "x", "radius"))
        pts.setdefault(row["image"], [])
        rad.setdefault(row["image"], [])
        if vals is not None:
            r = vals[2] if len(vals) > 2 else math.nan
            if r < 0:
                raise CSVFormatError(f"{p}, line {lineno}: negative radius {r}")
            key = (row["image"], round(vals[0], 3), round(vals[1], 3))
            if key in seen and duplicates != "keep":
                repeats.append((lineno, seen[key], row["image"]))
                continue
            seen.setdefault(key, lineno)
            pts[row["image"]].append((vals[0], vals[1]))
            rad[row["image"]].append(r)
    if repeats:
        shown = "; ".join(f"line {a} repeats line {b} ({i})" for a, b, i in repeats[:5])
        more = f" and {len(repeats) - 5} more" if len(repeats) > 5 else ""
        msg = (
            f"{Path(path)}: {len(repeats)} duplicated ground-truth row(s) (same image and centre) "
            f"would count a lesion twice: {shown}{more}"
        )
        if duplicates == "error":
            raise CSVFormatError(msg)
        warnings.warn(msg + "; the repeats are ignored", DuplicateRowsWarning, stacklevel=2)
    return {
        k: (np.asarray(pts[k]).reshape(-1, 2), np.asarray(rad[k], dtype=np.float64)) for k in pts
    }


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Image ids from a text file (one per line, ``#`` comments) or a CSV with an ``image`` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    if "," in first or first.strip().lower() == "image":
        cols = [c.strip().lower() for c in first.split(",")]
        if "image" not in cols:
            raise CSVFormatError(f"{path}, line 1: a CSV image list needs an 'image' column")
        ids = [row["image"] for _, _, row in _open_rows(path, ("image",))]
        for i, v in enumerate(ids):
            if not v:
                raise CSVFormatError(f"{path}: empty image id in row {i + 2}")
    else:
        ids = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    seen: set[str] = set()
    out = []
    for v in ids:  # keep the first occurrence
        if v not in seen:
            seen.add(v)
            out.append(v)
    if not out:
        raise CSVFormatError(f"{path}: the image list is empty")
    return out


def write_predictions_csv(
    path: str | os.PathLike,
    predictions: Mapping[str, Detections],
    *,
    include_empty: bool = True,
) -> Path:
    """Write {image_id: Detections} as ``image,y,x,score`` (atomic).

    With ``include_empty`` an image without detections gets one ``image,,,`` row so the reader
    still knows it was processed.
    """
    lines = ["image,y,x,score"]
    for iid, det in predictions.items():
        _check_id(iid)
        if len(det) == 0:
            if include_empty:
                lines.append(f"{_q(iid)},,,")
            continue
        for (y, x), s in zip(det.points.tolist(), det.scores.tolist(), strict=True):
            lines.append(f"{_q(iid)},{y:.3f},{x:.3f},{s:.6g}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_ground_truth_csv(
    path: str | os.PathLike,
    ground_truth: Mapping[str, Sample | tuple[np.ndarray, np.ndarray]] | Iterable[Sample],
) -> Path:
    """Write lesions as ``image,y,x,radius`` (lesion-free images as ``image,,,``)."""
    if not isinstance(ground_truth, Mapping):
        ground_truth = {s.image_id: s for s in ground_truth}
    lines = ["image,y,x,radius"]
    for iid, v in ground_truth.items():
        _check_id(iid)
        pts, rad = (v.points, v.radii) if isinstance(v, Sample) else v
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        rad = np.asarray(rad, dtype=np.float64).reshape(-1)
        if len(pts) == 0:
            lines.append(f"{_q(iid)},,,")
        for (y, x), r in zip(pts.tolist(), rad.tolist(), strict=True):
            lines.append(f"{_q(iid)},{y:.3f},{x:.3f},{'' if math.isnan(r) else f'{r:.3f}'}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _check_id(iid: str) -> None:
    if not str(iid) or "\n" in str(iid):
        raise ValueError(f"invalid image id {iid!r}")


def _q(iid: str) -> str:
    s = str(iid)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"') else s
