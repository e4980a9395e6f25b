"""Write samples to disk as a generic folder, an INbreast folder or an E-ophtha-MA folder.

Each writer produces exactly the layout the matching reader in :mod:`napari_gravity.data.datasets`
expects, so generated data exercise the real readers end to end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from napari_gravity.types import Sample

from ..annotations import write_inbreast_xml, write_lesion_mask, write_points_csv

#: Digital Mammography X-Ray Image Storage - For Presentation
MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"

Item = Sample | tuple[Sample, np.ndarray]


def _split_item(item: Item) -> tuple[Sample, np.ndarray | None]:
    if isinstance(item, tuple):
        return item[0], item[1]
    return item, None


def _safe_name(text: str, fallback: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", text or "").strip("-.")
    return s or fallback


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Round and clip to uint16 (lossless for the generators' integer-valued images)."""
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


def to_uint8(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale to uint8: integer images already in [0, 255] are kept; others are min-max scaled."""
    img = np.asarray(image, dtype=np.float64)
    if img.min() >= 0 and img.max() <= 255 and np.allclose(img, np.round(img)):
        return img.astype(np.uint8)
    ref = img[mask] if mask is not None and mask.any() else img
    lo, hi = float(ref.min()), float(ref.max())
    return np.clip(np.round((img - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)


def _write_mask_png(path: Path, mask: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, mask.astype(np.uint8) * 255)


# --------------------------------------------------------------------------- generic folder
def write_folder(
    items: Iterable[Item], out_dir: str | os.PathLike, *, ext: str | None = None
) -> list[Path]:
    """Generic folder: ``IMG.<ext>`` + ``IMG.csv`` (``y,x,radius``) [+ ``IMG.mask.png``].

    ``ext`` defaults to ``.tif`` (16-bit) for gray images and ``.png`` for samples given with an
    RGB array. A lesion-free image gets a header-only CSV. The mask is written when it is not
    all True.
    """
    import imageio.v3 as iio
    import tifffile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, item in enumerate(items):
        s, rgb = _split_item(item)
        name = _safe_name(s.image_id, f"img{k:05d}")
        e = ext or (".png" if rgb is not None else ".tif")
        p = out / f"{name}{e}"
        if e in (".tif", ".tiff"):
            res = {}
            if s.spacing is not None:  # pixels per cm, read back as the spacing in mm
                res = {
                    "resolution": (10.0 / s.spacing[1], 10.0 / s.spacing[0]),
                    "resolutionunit": "CENTIMETER",
                }
            tifffile.imwrite(
                p, to_uint16(s.image) if rgb is None else rgb, compression="zlib", **res
            )
        elif e == ".png":
            iio.imwrite(p, rgb if rgb is not None else to_uint8(s.image, s.mask))
        elif e in (".jpg", ".jpeg"):
            iio.imwrite(p, rgb if rgb is not None else to_uint8(s.image, s.mask), quality=95)
        else:
            raise ValueError(f"{p}: unsupported image extension {e}")
        write_points_csv(out / f"{name}.csv", s.points, s.radii)
        if s.mask is not None and not np.all(s.mask):
            _write_mask_png(out / f"{name}.mask.png", s.mask)
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- INbreast
def write_dicom(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    spacing: tuple[float, float] | None = (0.07, 0.07),
    laterality: str = "L",
    view: str = "CC",
    patient_id: str = "SYNTH",
    monochrome1: bool = False,
    compress: str | None = None,
) -> Path:
    """Write a 16-bit MG DICOM (MONOCHROME2 by default).

    ``compress``: None (explicit VR little endian), ``"rle"`` (RLE Lossless, numpy encoder) or
    ``"j2k"`` (JPEG 2000 lossless, needs pylibjpeg-openjpeg). ``monochrome1`` stores the
    inverted values with MONOCHROME1 (the reader inverts them back).
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint16(image)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MG_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.PatientID = patient_id
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    if spacing is not None:
        ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
        ds.ImagerPixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    if monochrome1:
        arr = (65535 - arr.astype(np.int64)).astype(np.uint16)
    ds.PixelData = arr.tobytes()
    if compress == "rle":
        ds.compress(pydicom.uid.RLELossless, encoding_plugin="pydicom")
    elif compress == "j2k":
        ds.compress(pydicom.uid.JPEG2000Lossless)
    elif compress is not None:
        raise ValueError(f"{p}: unknown compression {compress!r} (use None, 'rle' or 'j2k')")
    ds.save_as(str(p), enforce_file_format=True)
    return p


def inbreast_name(file_id: str, patient: str, laterality: str, view: str) -> str:
    """``<fileid>_<patienthash>_MG_<L|R>_<CC|MLO>_ANON`` (no extension)."""
    return (
        f"{file_id}_{_safe_name(patient, 'patient').replace('_', '-')}_MG_{laterality}_{view}_ANON"
    )


def write_inbreast(
    items: Iterable[Item],
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    first_file_id: int = 50000000,
    compress: str | None = None,
    laterality: str | None = None,
) -> list[Path]:
    """INbreast layout: ``AllDICOMs/<fileid>_<patient>_MG_<L|R>_<CC|MLO>_ANON.dcm`` and
    ``AllXML/<fileid>.xml`` (plist with one Calcification ROI per lesion; none when
    lesion-free).

    Samples are taken to have the chest wall on the left (the generators' convention);
    laterality is drawn per image and right breasts are stored mirrored (chest wall on the
    right, points mapped ``x' = W-1-x``) as in real data, so the reader's orientation step is
    exercised. The file id is the sample's ``image_id`` when it is all digits, else
    ``first_file_id + k``. ``laterality`` "L" / "R" forces the side of every image.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (out / "AllXML").mkdir(parents=True, exist_ok=True)
    paths = []
    for k, item in enumerate(items):
        s, _ = _split_item(item)
        fid = s.image_id if s.image_id.isdigit() else str(first_file_id + k)
        lat = "R" if rng.uniform() < 0.5 else "L"
        lat = laterality or lat
        view = "CC" if rng.uniform() < 0.5 else "MLO"
        img, pts = s.image, s.points.copy()
        if lat == "R":
            img = img[:, ::-1]
            pts[:, 1] = img.shape[1] - 1 - pts[:, 1]
        name = inbreast_name(fid, s.patient_id or f"P{k:04d}", lat, view)
        p = write_dicom(
            out / "AllDICOMs" / f"{name}.dcm",
            img,
            spacing=s.spacing or (0.07, 0.07),
            laterality=lat,
            view=view,
            patient_id=s.patient_id or "SYNTH",
            compress=compress,
        )
        if len(pts):
            write_inbreast_xml(
                out / "AllXML" / f"{fid}.xml", pts, s.radii, spacing=s.spacing or (0.07, 0.07)
            )
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- E-ophtha-MA
def write_eophtha(
    items: Iterable[Item], out_dir: str | os.PathLike, *, quality: int = 95
) -> list[Path]:
    """E-ophtha-MA layout: ``MA/<patient>/<image>.jpg`` + ``Annotation_MA/<patient>/<image>.png``
    (one disk per lesion) for images with lesions, ``healthy/<patient>/<image>.jpg`` otherwise.
    RGB arrays are written as given; gray images are scaled to 8 bits and stored as RGB.
    """
    import imageio.v3 as iio

    out = Path(out_dir)
    paths = []
    for k, item in enumerate(items):
        s, rgb = _split_item(item)
        name = _safe_name(s.image_id, f"img{k:05d}")
        patient = _safe_name(s.patient_id, "patient")
        if rgb is None:
            g = to_uint8(s.image, s.mask)
            rgb = np.stack([g, g, g], axis=-1)
        folder = "MA" if len(s.points) else "healthy"
        p = out / folder / patient / f"{name}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(p, rgb, quality=quality)
        if len(s.points):
            write_lesion_mask(
                out / "Annotation_MA" / patient / f"{name}.png", s.image.shape, s.points, s.radii
            )
        paths.append(p)
    return paths


WRITERS = {"folder": write_folder, "inbreast": write_inbreast, "eophtha": write_eophtha}


def write_samples(
    items: Iterable[Item], out_dir: str | os.PathLike, format: str = "folder", **kw
) -> list[Path]:
    """Write with the writer of ``format`` (``folder`` | ``inbreast`` | ``eophtha``)."""
    if format not in WRITERS:
        raise ValueError(f"unknown format {format!r} (use {', '.join(WRITERS)})")
    return WRITERS[format](items, out_dir, **kw)
