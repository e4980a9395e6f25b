"""Lesion annotations: points CSV, napari Points CSV, INbreast XML (plist), E-ophtha-MA masks.

All readers return (y, x) centres in pixels and radii in pixels. Malformed input raises
:class:`AnnotationError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import math
import os
import plistlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.fileio import atomic_write, atomic_write_text

#: Default radius (px) of a point annotated without one (points CSV without a radius column).
DEFAULT_RADIUS = 3.0
#: Radius (px) of a one-point INbreast calcification ROI (the XML gives no extent).
INBREAST_POINT_RADIUS = 1.0
#: Smallest radius (px) derived from an INbreast contour's extent.
INBREAST_MIN_RADIUS = 0.5
#: Largest INbreast XML read (bytes); the real ones are well under 1 MB.
MAX_XML_BYTES = 64 << 20
#: CSV ``status`` values that mark a row as *not* a lesion.
NON_LESION_STATUS = frozenset({"rejected", "pending"})
OPTIONAL_COLUMNS = ("score", "source", "status")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the line when known."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class PointTable:
    """Annotated points: (y, x) ``points``, ``radii`` and optional per-point columns.

    ``extra`` maps a column name (``score``, ``source``, ``status``, ...) to a list of
    strings (one per point, "" when empty). ``lines`` holds each point's 1-based line number
    in the source file (for error messages).
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    radii: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra: dict[str, list[str]] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points)

    def lesion_mask(self) -> np.ndarray:
        """True for rows that are lesions (``status`` not ``rejected`` / ``pending``)."""
        status = self.extra.get("status")
        if status is None:
            return np.ones(len(self), dtype=bool)
        return np.array([s.strip().lower() not in NON_LESION_STATUS for s in status], dtype=bool)

    def lesions(self) -> PointTable:
        """Only the rows that are lesions."""
        keep = self.lesion_mask()
        return PointTable(
            self.points[keep],
            self.radii[keep],
            {
                k: [v for v, m in zip(vals, keep, strict=False) if m]
                for k, vals in self.extra.items()
            },
            [ln for ln, m in zip(self.lines, keep, strict=False) if m],
        )


def _check_inside(path, pts: np.ndarray, lines: list[int] | None, shape) -> None:
    """Raise when a point lies outside the image (pixel extents [-0.5, size-0.5])."""
    if shape is None or len(pts) == 0:
        return
    h, w = int(shape[0]), int(shape[1])
    bad = (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        line = lines[i] if lines else None
        raise AnnotationError(
            path,
            f"point (y={pts[i, 0]:g}, x={pts[i, 1]:g}) lies outside the {h}x{w} image"
            + (f" ({int(bad.sum())} such points)" if bad.sum() > 1 else ""),
            line,
        )


def _parse_float(path, text: str, col: str, line: int) -> float:
    try:
        val = float(text)
    except (TypeError, ValueError):
        raise AnnotationError(
            path, f"column {col[:40]!r}: {text[:40]!r} is not a number", line
        ) from None
    if not math.isfinite(val):
        raise AnnotationError(
            path, f"column {col[:40]!r}: {text[:40]!r} is not a finite number", line
        )
    return val


# --------------------------------------------------------------------------- points CSV
def read_points_csv(
    path: str | os.PathLike,
    shape: tuple[int, int] | None = None,
    *,
    default_radius: float = DEFAULT_RADIUS,
) -> PointTable:
    """Read our points CSV (``y,x[,radius][,score,source,status,...]``) or napari's Points CSV.

    napari's format (``index,axis-0,axis-1[,axis-2...]``) is recognised by its ``axis-*``
    columns; its last two axes are (y, x). The header is required. With ``shape`` given,
    a point outside the image raises an error with its line number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(p, "no such file") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(p, f"not a text CSV file ({exc})") from None
    if not text.strip():
        raise AnnotationError(p, "the file is empty (a header 'y,x,radius' is required)", 1)
    try:
        return _read_points_rows(p, text, shape, default_radius)
    except csv.Error as exc:  # NUL bytes, a field over the csv module's limit, ...
        raise AnnotationError(p, f"not a readable CSV ({exc})") from None


def _read_points_rows(p: Path, text: str, shape, default_radius: float) -> PointTable:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader)]
    low = [h.lower() for h in header]
    dup = sorted({h for h in low if h and low.count(h) > 1})
    if dup:
        raise AnnotationError(
            p, f"duplicated column(s) {', '.join(map(repr, dup))} in the header {header}"[:300], 1
        )
    axis_cols = sorted(
        (int(h.split("-", 1)[1]), i) for i, h in enumerate(low) if re.fullmatch(r"axis-\d+", h)
    )
    if len(axis_cols) >= 2:
        iy, ix = axis_cols[-2][1], axis_cols[-1][1]
    elif "y" in low and "x" in low:
        iy, ix = low.index("y"), low.index("x")
    else:
        raise AnnotationError(
            p,
            f"missing columns: need 'y' and 'x' (or napari 'axis-0,axis-1'); header is {str(header)[:200]}",
            1,
        )
    ir = low.index("radius") if "radius" in low else None
    skip = {iy, ix} | ({ir} if ir is not None else set())
    skip |= {i for i, h in enumerate(low) if h == "index" or re.fullmatch(r"axis-\d+", h)}
    extra_idx = {header[i]: i for i in range(len(header)) if i not in skip and header[i]}
    pts, rads, lines = [], [], []
    extra: dict[str, list[str]] = {k: [] for k in extra_idx}
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(
                p, f"expected {len(header)} fields ({','.join(header)[:200]}), got {len(row)}", line
            )
        y = _parse_float(p, row[iy].strip(), header[iy], line)
        x = _parse_float(p, row[ix].strip(), header[ix], line)
        if ir is not None and row[ir].strip() != "":
            r = _parse_float(p, row[ir].strip(), "radius", line)
            if r <= 0:
                raise AnnotationError(p, f"radius must be positive, got {r:g}", line)
        else:
            r = float(default_radius)
        if "score" in extra_idx and row[extra_idx["score"]].strip() != "":
            _parse_float(p, row[extra_idx["score"]].strip(), "score", line)
        pts.append((y, x))
        rads.append(r)
        lines.append(line)
        for k, i in extra_idx.items():
            extra[k].append(row[i].strip())
    table = PointTable(
        np.asarray(pts, dtype=np.float64).reshape(-1, 2),
        np.asarray(rads, dtype=np.float64),
        extra,
        lines,
    )
    _check_inside(p, table.points, lines, shape)
    return table


def write_points_csv(
    path: str | os.PathLike,
    points,
    radii=None,
    *,
    score=None,
    source=None,
    status=None,
    precision: int = 3,
) -> Path:
    """Write our points CSV ``y,x,radius[,score,source,status]`` atomically (temp + replace)."""
    p = Path(path)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    rad = np.full(n, DEFAULT_RADIUS) if radii is None else np.asarray(radii, float).reshape(-1)
    cols: dict[str, Any] = {}
    for name, vals in (("score", score), ("source", source), ("status", status)):
        if vals is not None:
            vals = list(vals) if not isinstance(vals, str) else [vals] * n
            if len(vals) != n:
                raise ValueError(f"{p}: {len(vals)} {name} values for {n} points")
            cols[name] = vals
    if len(rad) != n:
        raise ValueError(f"{p}: {len(rad)} radii for {n} points")
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["y", "x", "radius", *cols])
    fmt = f"{{:.{precision}f}}"
    for i in range(n):
        row = [fmt.format(pts[i, 0]), fmt.format(pts[i, 1]), fmt.format(rad[i])]
        for name, vals in cols.items():
            v = vals[i]
            row.append(f"{v:.6g}" if name == "score" and v not in ("", None) else str(v))
        wr.writerow(row)
    atomic_write_text(p, buf.getvalue())
    return p


def write_napari_points_csv(path: str | os.PathLike, points) -> Path:
    """Write napari's Points CSV (``index,axis-0,axis-1``) atomically."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lines = ["index,axis-0,axis-1"] + [f"{i},{y:.6g},{x:.6g}" for i, (y, x) in enumerate(pts)]
    p = Path(path)
    atomic_write_text(p, "\n".join(lines) + "\n")
    return p


# --------------------------------------------------------------------------- INbreast XML
@dataclass
class Roi:
    """One INbreast ROI: its ``name``, contour (y, x) points, centre (y, x) and radius (px)."""

    name: str
    contour: np.ndarray
    centre: tuple[float, float]
    radius: float
    image_index: int = 0

    @property
    def is_calcification(self) -> bool:
        return "calcification" in self.name.lower()


_PT_RE = re.compile(r"^\s*\(?\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)?\s*$")


def _parse_xy(path, text: Any, where: str) -> tuple[float, float]:
    if not isinstance(text, str):
        raise AnnotationError(
            path, f"{where}: point {str(text)[:60]!r} is a {type(text).__name__}, not '(x, y)'"
        )
    m = _PT_RE.match(text)
    if not m:
        raise AnnotationError(
            path, f"{where}: cannot parse point {text[:60]!r} (expected '(x, y)')"
        )
    x, y = float(m.group(1)), float(m.group(2))
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(path, f"{where}: point {text!r} is not finite")
    return x, y


def roi_centre_radius(
    xy: np.ndarray,
    *,
    point_radius: float = INBREAST_POINT_RADIUS,
    min_radius: float = INBREAST_MIN_RADIUS,
) -> tuple[tuple[float, float], float]:
    """Centre (y, x) of the bounding box of contour points (x, y) and the radius.

    radius = half the larger bounding-box side (at least ``min_radius``); a single point
    (or a degenerate contour) gets ``point_radius``.
    """
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    centre = ((y0 + y1) / 2.0, (x0 + x1) / 2.0)
    extent = max(x1 - x0, y1 - y0)
    if len(xy) == 1 or extent == 0:
        return centre, float(point_radius)
    return centre, float(max(extent / 2.0, min_radius))


def read_inbreast_xml(
    path: str | os.PathLike,
    *,
    point_radius: float = INBREAST_POINT_RADIUS,
    min_radius: float = INBREAST_MIN_RADIUS,
) -> list[Roi]:
    """All ROIs of an INbreast XML (Apple plist: ``Images`` → ``ROIs`` → ``Point_px``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(p, "no such file") from None
    if not data.strip():
        raise AnnotationError(p, "the file is empty")
    if len(data) > MAX_XML_BYTES:
        raise AnnotationError(
            p, f"{len(data):,} bytes: larger than any INbreast XML (at most {MAX_XML_BYTES:,})"
        )
    if data.startswith(b"bplist"):
        # binary plists can reference one object many times (a tiny file, millions of ROIs)
        raise AnnotationError(p, "a binary plist, not an INbreast XML plist")
    try:
        plist = plistlib.loads(data, fmt=plistlib.FMT_XML)
    except Exception as exc:
        line = getattr(exc, "lineno", None)
        raise AnnotationError(p, f"not a valid plist XML ({exc})", line) from None
    if not isinstance(plist, dict) or "Images" not in plist:
        raise AnnotationError(p, "missing the top-level 'Images' key of an INbreast XML")
    images = plist["Images"]
    if isinstance(images, dict):  # a single image written without the array
        images = [images]
    if not isinstance(images, list):
        raise AnnotationError(p, "'Images' is not a list")
    if not images:
        raise AnnotationError(p, "'Images' is empty: the XML annotates nothing")
    rois: list[Roi] = []
    for ii, im in enumerate(images):
        if not isinstance(im, dict):
            raise AnnotationError(p, f"Images[{ii}] is not a dict")
        try:
            idx = int(im.get("ImageIndex", ii))
        except (TypeError, ValueError):
            raise AnnotationError(
                p, f"Images[{ii}].ImageIndex {str(im.get('ImageIndex'))[:40]!r} is not an integer"
            ) from None
        declared = im.get("NumberOfROIs")
        if "ROIs" not in im:
            if declared in (0, "0"):
                continue
            raise AnnotationError(
                p,
                f"Images[{ii}] has no 'ROIs' (NumberOfROIs {declared!r}): its lesions would be "
                "lost; fix or remove the file",
            )
        roi_list = im["ROIs"]
        if isinstance(roi_list, dict):
            roi_list = [roi_list]
        if roi_list is None:
            roi_list = []
        if not isinstance(roi_list, list):
            raise AnnotationError(p, f"Images[{ii}].ROIs is not a list")
        try:
            n_declared = None if declared is None else int(declared)
        except (TypeError, ValueError):
            n_declared = None
        if n_declared is not None and n_declared > len(roi_list):
            raise AnnotationError(
                p,
                f"Images[{ii}] declares NumberOfROIs {n_declared} but holds only "
                f"{len(roi_list)} ROIs (a truncated or edited file? lesions would be lost)",
            )
        for ri, roi in enumerate(roi_list):
            where = f"Images[{ii}].ROIs[{ri}]"
            if not isinstance(roi, dict):
                raise AnnotationError(p, f"{where} is not a dict")
            name = str(roi.get("Name", ""))[:80]
            raw = roi.get("Point_px")
            if raw is None:
                raise AnnotationError(p, f"{where} ({name!r}) has no 'Point_px'")
            if isinstance(raw, (str, bytes)):
                raw = [raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw]
            if not isinstance(raw, list):
                raise AnnotationError(
                    p, f"{where} ({name!r}): 'Point_px' is a {type(raw).__name__}, not a list"
                )
            if len(raw) == 0:
                raise AnnotationError(p, f"{where} ({name!r}) has an empty 'Point_px'")
            xy = np.array([_parse_xy(p, t, where) for t in raw], dtype=np.float64)
            centre, radius = roi_centre_radius(xy, point_radius=point_radius, min_radius=min_radius)
            rois.append(Roi(name, xy[:, ::-1].copy(), centre, radius, idx))
    return rois


def inbreast_calcifications(rois: list[Roi]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(points (y, x), radii, names) of the calcification ROIs (name contains 'Calcification')."""
    calc = [r for r in rois if r.is_calcification]
    pts = np.array([r.centre for r in calc], dtype=np.float64).reshape(-1, 2)
    rad = np.array([r.radius for r in calc], dtype=np.float64)
    return pts, rad, [r.name for r in calc]


def circle_contour(y: float, x: float, r: float, n: int = 16) -> np.ndarray:
    """An n-gon (y, x) on a circle, with vertices at the four axis extremes (n % 4 == 0)."""
    t = np.arange(n) * 2 * np.pi / n
    return np.stack([y + r * np.sin(t), x + r * np.cos(t)], axis=1)


def write_inbreast_xml(
    path: str | os.PathLike,
    points,
    radii,
    *,
    names: list[str] | None = None,
    spacing: tuple[float, float] = (0.07, 0.07),
    extra_rois: list[dict] | None = None,
) -> Path:
    """Write an INbreast-style plist XML with one ``Calcification`` contour ROI per point.

    Each contour is a 16-gon of radius r whose bounding box is exactly [c-r, c+r], so
    :func:`read_inbreast_xml` gives back the same centre and radius.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rad = np.asarray(radii, dtype=np.float64).reshape(-1)
    names = names or ["Calcification"] * len(pts)
    rois = []
    for i, ((y, x), r) in enumerate(zip(pts, rad, strict=False)):
        c = circle_contour(y, x, r)
        rois.append(
            {
                "Area": float(np.pi * r * r),
                "Center": f"({x:.4f}, {y:.4f})",
                "Dev": 0.0,
                "IndexInImage": i,
                "Max": 0.0,
                "Mean": 0.0,
                "Min": 0.0,
                "Name": names[i],
                "NumberOfPoints": len(c),
                "Point_mm": [f"({cx * spacing[1]:.5f}, {cy * spacing[0]:.5f}, 0)" for cy, cx in c],
                "Point_px": [f"({cx:.4f}, {cy:.4f})" for cy, cx in c],
                "Total": 0.0,
                "Type": 15,
            }
        )
    rois += list(extra_rois or [])
    plist = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
    return atomic_write(
        path, lambda tmp: tmp.write_bytes(plistlib.dumps(plist, fmt=plistlib.FMT_XML))
    )


# --------------------------------------------------------------------------- E-ophtha masks
def mask_to_points(mask: np.ndarray, *, connectivity: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a binary lesion mask → centroids (y, x) and equivalent radii
    ``sqrt(area / π)`` (8-connectivity by default)."""
    from scipy import ndimage as ndi

    m = np.asarray(mask).astype(bool)
    structure = ndi.generate_binary_structure(2, connectivity)
    lab, n = ndi.label(m, structure=structure)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    idx = np.arange(1, n + 1)
    cen = np.array(ndi.center_of_mass(m, lab, idx), dtype=np.float64).reshape(-1, 2)
    area = ndi.sum_labels(m, lab, idx)
    return cen, np.sqrt(np.asarray(area, dtype=np.float64) / np.pi)


def read_lesion_mask(
    path: str | os.PathLike, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an E-ophtha-MA annotation mask (PNG, any channel > half range) → points, radii."""
    from .readers import ImageReadError, read_image

    p = Path(path)
    try:
        img = read_image(p, channel="gray").image
    except ImageReadError as exc:
        raise AnnotationError(p, exc.problem) from None
    if shape is not None and img.shape != tuple(shape[:2]):
        raise AnnotationError(
            p,
            f"mask shape {img.shape[0]}x{img.shape[1]} differs from the image {shape[0]}x{shape[1]}",
        )
    hi = float(img.max())
    if hi <= 0:
        return np.zeros((0, 2)), np.zeros(0)
    return mask_to_points(img > hi / 2.0)


def points_to_mask(shape: tuple[int, int], points, radii) -> np.ndarray:
    """Rasterise disks (pixel centres within r of the point; at least the nearest pixel)."""
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    for (y, x), r in zip(
        np.asarray(points, float).reshape(-1, 2), np.asarray(radii, float), strict=False
    ):
        y0, y1 = max(int(np.floor(y - r)), 0), min(int(np.ceil(y + r)) + 1, h)
        x0, x1 = max(int(np.floor(x - r)), 0), min(int(np.ceil(x + r)) + 1, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        iy, ix = int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))
        out[iy, ix] = True
    return out


def write_lesion_mask(path: str | os.PathLike, shape: tuple[int, int], points, radii) -> Path:
    """Write an E-ophtha-style lesion mask PNG (0 / 255), one disk per lesion."""
    import imageio.v3 as iio

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(p, points_to_mask(shape, points, radii).astype(np.uint8) * 255)
    return p
