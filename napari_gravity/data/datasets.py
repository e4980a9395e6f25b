"""Data set builders: a generic folder, an INbreast folder and an E-ophtha-MA folder.

``open_dataset(root)`` lists the images as lazy :class:`SampleRef` records; ``ref.load()``
reads the image and its annotations and applies the preprocessing of the paper.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_gravity.types import Sample

from .annotations import (
    DEFAULT_RADIUS,
    INBREAST_MIN_RADIUS,
    INBREAST_POINT_RADIUS,
    AnnotationError,
    inbreast_calcifications,
    read_inbreast_xml,
    read_lesion_mask,
    read_points_csv,
)
from .augment import flip_sample, map_points_resize, resize_sample
from .masks import breast_mask, fundus_mask
from .readers import IMAGE_EXTS, ImageReadError, read_image

#: INbreast crop of paper 000 (rows, cols) and the calcification radius limit for evaluation.
INBREAST_CROP = (3328, 2560)
INBREAST_MAX_RADIUS = 7.0
#: E-ophtha-MA size of paper 000 (rows, cols).
EOPHTHA_SIZE = (1216, 1408)
FORMATS = ("folder", "inbreast", "eophtha")


class DatasetError(ValueError):
    """A data set folder that cannot be opened (names the folder and the problem)."""


@dataclass
class SampleRef:
    """A lazily loaded sample: ``load()`` reads the files and returns a :class:`Sample`."""

    image_id: str
    patient_id: str
    path: Path
    loader: Callable[[], Sample] = field(repr=False, compare=False)
    format: str = "folder"
    #: the annotation file this image's lesions come from (None: the image is lesion-free)
    annotation: Path | None = None

    def load(self) -> Sample:
        return self.loader()


def detect_format(root: str | os.PathLike) -> str:
    """``inbreast`` (AllDICOMs/), ``eophtha`` (MA/ or healthy/) or ``folder``."""
    r = Path(root)
    if (r / "AllDICOMs").is_dir():
        return "inbreast"
    if (r / "MA").is_dir() or (r / "healthy").is_dir():
        return "eophtha"
    return "folder"


def open_dataset(root: str | os.PathLike, format: str = "auto", **preprocess) -> list[SampleRef]:
    """List the samples of a data set folder (sorted by image id).

    ``format``: ``auto`` | ``folder`` | ``inbreast`` | ``eophtha``. Preprocessing options:

    - folder: ``channel="green"``, ``default_radius=3.0``, ``recursive=False``, ``mask=True``
      (read ``IMG.mask.png`` when present).
    - inbreast: ``orient="left"`` (chest wall on the left; ``None`` keeps the files as they
      are), ``crop=(3328, 2560)`` (``None`` = no crop; images already smaller are not cropped),
      ``max_radius=7.0`` (keep calcifications with radius < 7 px; ``None`` keeps all),
      ``point_radius=1.0`` (one-point ROIs), ``mask=True`` (breast mask).
    - eophtha: ``channel="green"``, ``size=(1216, 1408)`` (``None`` keeps the original size),
      ``fov_crop=True`` (crop to the field of view before resizing), ``mask=True`` (FOV mask).
    """
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"{r}: no such data set folder")
    fmt = detect_format(r) if format == "auto" else format
    if fmt == "folder":
        refs = _open_folder(r, **preprocess)
    elif fmt == "inbreast":
        refs = _open_inbreast(r, **preprocess)
    elif fmt == "eophtha":
        refs = _open_eophtha(r, **preprocess)
    else:
        raise DatasetError(
            f"{r}: unknown data set format {format!r} (use auto, {', '.join(FORMATS)})"
        )
    return sorted(refs, key=lambda s: s.image_id)


# --------------------------------------------------------------------------- generic folder
def _read_patients(root: Path) -> dict[str, str]:
    """Optional ``patients.csv`` (``image,patient``) mapping image ids to patient ids."""
    p = root / "patients.csv"
    if not p.exists():
        return {}
    out: dict[str, str] = {}
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rd = csv.DictReader(fh)
            names = [f.strip().lower() for f in (rd.fieldnames or [])]
            dup = sorted({n for n in names if n and names.count(n) > 1})
            if dup:
                raise AnnotationError(p, f"duplicated column(s) {', '.join(map(repr, dup))}", 1)
            if "image" not in (rd.fieldnames or []) or "patient" not in (rd.fieldnames or []):
                raise AnnotationError(p, "patients.csv needs the columns 'image,patient'", 1)
            for row in rd:
                image = (row.get("image") or "").strip()
                patient = (row.get("patient") or "").strip()
                if not image or not patient:
                    raise AnnotationError(p, "empty image or patient", rd.line_num)
                if out.get(image, patient) != patient:
                    raise AnnotationError(
                        p,
                        f"image {image[:60]!r} is given two patients ({out[image][:40]!r}, "
                        f"{patient[:40]!r}): the patient-level split would be wrong",
                        rd.line_num,
                    )
                out[image] = patient
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(p, f"not a readable CSV ({exc})") from None
    return out


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return (
        p.is_file()
        and p.suffix.lower() in IMAGE_EXTS
        and not name.endswith(".mask.png")
        and not name.startswith(".")
    )


def load_folder_sample(
    path: str | os.PathLike,
    *,
    channel="green",
    default_radius: float = DEFAULT_RADIUS,
    mask: bool = True,
    image_id: str | None = None,
    patient_id: str | None = None,
) -> Sample:
    """One image of a generic folder with its ``IMG.csv`` (lesions only) and ``IMG.mask.png``."""
    p = Path(path)
    rec = read_image(p, channel=channel)
    csv_path = p.with_suffix(".csv")
    pts, rad = np.zeros((0, 2)), np.zeros(0)
    if csv_path.exists():
        table = read_points_csv(csv_path, rec.image.shape, default_radius=default_radius).lesions()
        pts, rad = table.points, table.radii
    m = None
    mpath = p.with_name(p.stem + ".mask.png")
    if mask and mpath.exists():
        mrec = read_image(mpath, channel="gray")
        if mrec.image.shape != rec.image.shape:
            raise ImageReadError(
                mpath, f"mask shape {mrec.image.shape} differs from the image {rec.image.shape}"
            )
        m = mrec.image > 0
    return Sample(
        image=rec.image,
        points=pts,
        radii=rad,
        mask=m,
        image_id=image_id or p.stem,
        patient_id=patient_id or image_id or p.stem,
        spacing=rec.spacing,
        path=str(p),
    )


def _open_folder(
    root: Path,
    *,
    channel="green",
    default_radius: float = DEFAULT_RADIUS,
    recursive: bool = False,
    mask: bool = True,
) -> list[SampleRef]:
    files = sorted(root.rglob("*") if recursive else root.iterdir())
    images = [p for p in files if _is_image(p)]
    patients = _read_patients(root)
    refs = []
    seen: dict[str, Path] = {}
    for p in images:
        iid = (
            p.stem
            if not recursive
            else str(p.relative_to(root).with_suffix("")).replace(os.sep, "/")
        )
        if iid in seen:
            raise DatasetError(
                f"{root}: two images share the id {iid!r}: {seen[iid].name}, {p.name}"
            )
        seen[iid] = p
        pid = patients.get(iid, iid)

        def loader(p=p, iid=iid, pid=pid) -> Sample:
            return load_folder_sample(
                p,
                channel=channel,
                default_radius=default_radius,
                mask=mask,
                image_id=iid,
                patient_id=pid,
            )

        csv_path = p.with_suffix(".csv")
        refs.append(
            SampleRef(iid, pid, p, loader, "folder", csv_path if csv_path.is_file() else None)
        )
    return refs


# --------------------------------------------------------------------------- INbreast
def parse_inbreast_name(name: str) -> dict[str, str]:
    """``<fileid>_<patient>_MG_<L|R>_<CC|MLO>_ANON`` → {file_id, patient_id, laterality, view}."""
    tok = Path(name).stem.split("_")
    out = {"file_id": tok[0], "patient_id": tok[1] if len(tok) > 1 else tok[0]}
    if len(tok) > 3 and tok[3].upper() in ("L", "R"):
        out["laterality"] = tok[3].upper()
    if len(tok) > 4:
        out["view"] = tok[4].upper()
    return out


def _chest_wall_side(image: np.ndarray) -> str:
    """'left' or 'right': the half holding more tissue (brighter) is the chest wall side."""
    w = image.shape[1]
    return "left" if image[:, : w // 2].mean() >= image[:, w - w // 2 :].mean() else "right"


def best_crop(
    mask: np.ndarray, points: np.ndarray, radii: np.ndarray, size: tuple[int, int], step: int = 16
) -> tuple[int, int]:
    """Top-left of the ``size`` window holding every lesion (with its radius) and the most
    tissue; if no window holds them all, the one holding the most lesions (with a warning)."""
    h, w = mask.shape
    ch, cw = min(size[0], h), min(size[1], w)
    tops = np.unique(np.r_[np.arange(0, h - ch + 1, step), h - ch])
    lefts = np.unique(np.r_[np.arange(0, w - cw + 1, step), w - cw])
    sat = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    T, L = np.meshgrid(tops, lefts, indexing="ij")
    tissue = sat[T + ch, L + cw] - sat[T, L + cw] - sat[T + ch, L] + sat[T, L]
    if len(points):
        y, x, r = points[:, 0], points[:, 1], radii
        inside = (
            (y[None, None] - r >= T[..., None] - 0.5)
            & (y[None, None] + r <= T[..., None] + ch - 0.5)
            & (x[None, None] - r >= L[..., None] - 0.5)
            & (x[None, None] + r <= L[..., None] + cw - 0.5)
        ).sum(-1)
    else:
        inside = np.zeros_like(tissue)
    best = inside.max()
    if best < len(points):
        warnings.warn(
            f"no {size[0]}x{size[1]} window holds all {len(points)} lesions; keeping {best}",
            stacklevel=3,
        )
    score = np.where(inside == best, tissue, -1)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(tops[i]), int(lefts[j])


def load_inbreast_sample(
    dcm: str | os.PathLike,
    xml: str | os.PathLike | None,
    *,
    orient: str | None = "left",
    crop: tuple[int, int] | None = INBREAST_CROP,
    max_radius: float | None = INBREAST_MAX_RADIUS,
    point_radius: float = INBREAST_POINT_RADIUS,
    min_radius: float = INBREAST_MIN_RADIUS,
    mask: bool = True,
) -> Sample:
    """One INbreast image: DICOM + calcification ROIs of its XML, oriented and cropped."""
    from .augment import crop_sample

    dcm = Path(dcm)
    info = parse_inbreast_name(dcm.name)
    if xml is not None and not Path(xml).is_file():
        raise AnnotationError(xml, f"no such annotation file (for {dcm.name})")
    rec = read_image(dcm)
    pts, rad = np.zeros((0, 2)), np.zeros(0)
    if xml is not None:
        rois = read_inbreast_xml(xml, point_radius=point_radius, min_radius=min_radius)
        pts, rad, _ = inbreast_calcifications(rois)
        h, w = rec.image.shape
        bad = (
            (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
        )
        if bad.any():
            y, x = pts[np.flatnonzero(bad)[0]]
            raise AnnotationError(
                xml, f"calcification (y={y:g}, x={x:g}) lies outside the {h}x{w} image"
            )
    s = Sample(
        image=rec.image,
        points=pts,
        radii=rad,
        image_id=info["file_id"],
        patient_id=info["patient_id"],
        spacing=rec.spacing,
        path=str(dcm),
    )
    if orient is not None:
        lat = info.get("laterality") or rec.meta.get("laterality")
        side = {"L": "left", "R": "right"}.get(lat or "", None) or _chest_wall_side(rec.image)
        if orient not in ("left", "right"):
            raise ValueError(f"orient must be 'left', 'right' or None, got {orient!r}")
        if side != orient:
            s = flip_sample(s, 1)
    m = breast_mask(s.image) if mask else None
    s = replace(s, mask=m)
    if crop is not None and (s.image.shape[0] > crop[0] or s.image.shape[1] > crop[1]):
        ref_mask = m if m is not None else breast_mask(s.image)
        top, left = best_crop(ref_mask, s.points, s.radii, crop)
        ch, cw = min(crop[0], s.image.shape[0]), min(crop[1], s.image.shape[1])
        s = crop_sample(s, top, left, ch, cw)
        if m is None:
            s = replace(s, mask=None)
    if max_radius is not None and len(s.points):
        keep = s.radii < max_radius
        s = replace(s, points=s.points[keep], radii=s.radii[keep])
    return s


def _open_inbreast(root: Path, **opts) -> list[SampleRef]:
    ddir, xdir = root / "AllDICOMs", root / "AllXML"
    if not ddir.is_dir():
        raise DatasetError(f"{root}: not an INbreast folder (no AllDICOMs/ folder)")
    if not xdir.is_dir():
        warnings.warn(
            f"{root}: no AllXML/ folder: every image is read as lesion-free", stacklevel=3
        )
    refs = []
    for p in sorted(ddir.iterdir()):
        if not p.is_file() or p.suffix.lower() not in (".dcm", ".dicom") or p.name.startswith("."):
            continue
        info = parse_inbreast_name(p.name)
        xml = xdir / f"{info['file_id']}.xml"

        ann = xml if xml.is_file() else None

        def loader(p=p, ann=ann) -> Sample:
            return load_inbreast_sample(p, ann, **opts)

        refs.append(SampleRef(info["file_id"], info["patient_id"], p, loader, "inbreast", ann))
    if not refs:
        raise DatasetError(f"{ddir}: no DICOM files")
    return refs


# --------------------------------------------------------------------------- E-ophtha-MA
def load_eophtha_sample(
    image: str | os.PathLike,
    annotation: str | os.PathLike | None,
    *,
    channel="green",
    size: tuple[int, int] | None = EOPHTHA_SIZE,
    fov_crop: bool = True,
    mask: bool = True,
    image_id: str | None = None,
    patient_id: str | None = None,
) -> Sample:
    """One E-ophtha-MA image (green channel) with its MA mask, resized with exact mapping.

    Before resizing to ``size``, ``fov_crop`` crops the image to the bounding box of its field
    of view (and of every lesion), so the 3:2 photographs are not squeezed by ~30% into the
    paper's 1216×1408 (the paper does not say how it resized; this keeps MAs round).
    """
    p = Path(image)
    rec = read_image(p, channel=channel)
    pts, rad = np.zeros((0, 2)), np.zeros(0)
    if annotation is not None:
        pts, rad = read_lesion_mask(annotation, rec.image.shape)
    s = Sample(
        image=rec.image,
        points=pts,
        radii=rad,
        image_id=image_id or p.stem,
        patient_id=patient_id or p.parent.name,
        spacing=rec.spacing,
        path=str(p),
    )
    if size is not None and fov_crop:
        s = _crop_to_fov(s)
    if size is not None and tuple(s.image.shape) != tuple(size):
        s = resize_sample(s, size)
    if mask:
        s = replace(s, mask=fundus_mask(s.image))
    return s


def _crop_to_fov(s: Sample) -> Sample:
    """Crop to the bounding box of the field of view, grown to hold every lesion."""
    from .augment import crop_sample

    fm = fundus_mask(s.image, erode=0)
    if fm.all() or not fm.any():
        return s
    rows, cols = np.flatnonzero(fm.any(axis=1)), np.flatnonzero(fm.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if len(s.points):
        lo = np.floor(s.points - s.radii[:, None] - 1).min(axis=0).astype(int)
        hi = np.ceil(s.points + s.radii[:, None] + 2).max(axis=0).astype(int)
        top, left = max(min(top, lo[0]), 0), max(min(left, lo[1]), 0)
        bottom, right = (
            min(max(bottom, hi[0]), s.image.shape[0]),
            min(max(right, hi[1]), s.image.shape[1]),
        )
    if (bottom - top) * (right - left) >= 0.98 * fm.size:
        return s
    out = crop_sample(s, int(top), int(left), int(bottom - top), int(right - left))
    return replace(out, mask=None, image_id=s.image_id)


def _open_eophtha(root: Path, **opts) -> list[SampleRef]:
    refs = []
    for folder, has_ann in (("MA", True), ("healthy", False)):
        base = root / folder
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if not _is_image(p):
                continue
            patient = p.parent.name if p.parent != base else p.stem
            ann = None
            if has_ann:
                rel = p.relative_to(base)
                cands = [
                    root / "Annotation_MA" / rel.with_suffix(e)
                    for e in (".png", ".PNG", ".tif", ".bmp")
                ]
                ann = next((c for c in cands if c.exists()), None)
                if ann is None:
                    raise DatasetError(
                        f"{p}: no lesion mask under Annotation_MA/{rel.with_suffix('.png')}"
                    )

            def loader(p=p, ann=ann, patient=patient) -> Sample:
                return load_eophtha_sample(p, ann, patient_id=patient, **opts)

            refs.append(SampleRef(p.stem, patient, p, loader, "eophtha", ann))
    if not refs:
        raise DatasetError(f"{root}: no images under MA/ or healthy/")
    return refs


# --------------------------------------------------------------------------- loud loading
#: INbreast DICOM names: ``<fileid>_<patienthash>_MG_<L|R>_<CC|MLO>_ANON``.
INBREAST_NAME_RE = re.compile(r"^\d+_[0-9A-Za-z]+_MG_[LR]_(CC|MLO)_ANON$", re.IGNORECASE)
_NOT_ANNOTATIONS = {"patients.csv", "splits.csv", "test_ground_truth.csv", "predictions.csv"}


@dataclass
class DatasetReport:
    """What a data set's annotation files hold, and what could not be matched.

    ``n_lesions`` counts the lesions of the annotation files (before preprocessing filters such
    as INbreast's ``max_radius``); ``unused`` lists annotation files that no image uses (a
    renamed image, a missing DICOM): their lesions would otherwise be lost silently.
    """

    n_images: int
    n_annotated: int
    n_lesions: int
    unused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.n_images} images, {self.n_lesions} lesions, "
            f"{len(self.unused)} annotation files unused"
        )

    def to_dict(self) -> dict:
        return {
            "n_images": self.n_images,
            "n_annotated_images": self.n_annotated,
            "n_lesions": self.n_lesions,
            "n_unused_annotation_files": len(self.unused),
            "unused_annotation_files": list(self.unused),
            "warnings": list(self.warnings),
        }


def _annotation_universe(refs: list[SampleRef]) -> set[Path]:
    """Every file that looks like an annotation beside the refs' images."""
    out: set[Path] = set()
    folders: set[Path] = set()
    for r in refs:
        p = Path(r.path)
        if r.format == "inbreast":
            folders.add(p.parent.parent / "AllXML")
        elif r.format == "eophtha":
            for parent in p.parents:
                if parent.name in ("MA", "healthy"):
                    folders.add(parent.parent / "Annotation_MA")
                    break
        else:
            folders.add(p.parent)
    for d in folders:
        if not d.is_dir():
            continue
        if d.name == "AllXML":
            out |= {q for q in d.iterdir() if q.suffix.lower() == ".xml" and q.is_file()}
        elif d.name == "Annotation_MA":
            out |= {q for q in d.rglob("*") if q.is_file() and not q.name.startswith(".")}
        else:
            out |= {
                q
                for q in d.iterdir()
                if q.suffix.lower() == ".csv"
                and q.is_file()
                and q.name.lower() not in _NOT_ANNOTATIONS
                and not q.name.startswith(".")
            }
    return out


def dataset_report(refs: list[SampleRef]) -> DatasetReport:
    """Count images, annotated lesions and unmatched annotation files of opened samples.

    Reads only the annotation files (never the images). A malformed annotation file raises
    :class:`AnnotationError`; duplicated points and INbreast names that do not fit the pattern
    are listed in ``warnings``."""
    n_lesions = 0
    annotated = 0
    warns: list[str] = []
    used: set[Path] = set()
    for r in refs:
        if r.format == "inbreast" and not INBREAST_NAME_RE.match(Path(r.path).stem):
            warns.append(
                f"{r.path}: the name does not fit the INbreast pattern "
                "<fileid>_<patient>_MG_<L|R>_<CC|MLO>_ANON"
                + ("" if r.annotation else f"; no AllXML/{r.image_id}.xml, read as lesion-free")
            )
        if r.annotation is None:
            continue
        ann = Path(r.annotation)
        used.add(ann.resolve())
        annotated += 1
        if r.format == "inbreast":
            rois = read_inbreast_xml(ann)
            pts, _, _ = inbreast_calcifications(rois)
            unnamed = sum(1 for roi in rois if not roi.name.strip())
            if unnamed:
                warns.append(f"{ann}: {unnamed} ROI(s) without a Name (not counted as lesions)")
        elif r.format == "eophtha":
            pts, _ = read_lesion_mask(ann)
            if len(pts) == 0:
                warns.append(f"{ann}: the lesion mask of an MA image holds no lesion")
        else:
            pts = read_points_csv(ann).lesions().points
        n_lesions += len(pts)
        if len(pts) > 1:
            uniq = len(np.unique(np.round(np.asarray(pts, float), 3), axis=0))
            if uniq < len(pts):
                warns.append(f"{ann}: {len(pts) - uniq} duplicated lesion point(s)")
    unused = sorted(str(p) for p in _annotation_universe(refs) if p.resolve() not in used)
    for u in unused:
        warns.append(f"{u}: annotation file matched to no image (its lesions are not used)")
    return DatasetReport(len(refs), annotated, n_lesions, unused, warns)


def mapped_points(points: np.ndarray, old_shape, new_shape) -> np.ndarray:
    """Re-export of :func:`augment.map_points_resize` for data set users."""
    return map_points_resize(points, old_shape, new_shape)
