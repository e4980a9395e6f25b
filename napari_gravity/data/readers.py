"""Image readers: DICOM, TIFF, PNG/JPEG → a float32 2-D image, pixel spacing and safe metadata.

Patient-identifying DICOM tags are never copied into ``meta`` (nor logged or exported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DICOM_EXTS = {".dcm", ".dicom", ".dic"}
TIFF_EXTS = {".tif", ".tiff"}
RASTER_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}
IMAGE_EXTS = DICOM_EXTS | TIFF_EXTS | RASTER_EXTS

#: DICOM keywords that may be copied into ``ImageRecord.meta`` (an allow-list: everything
#: else, in particular PatientName, PatientID, PatientBirthDate, institution and physician
#: names, accession numbers and UIDs, is dropped).
SAFE_DICOM_KEYWORDS = (
    "Modality",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "Rows",
    "Columns",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "PatientOrientation",
    "BodyPartExamined",
    "PresentationIntentType",
)

Channel = str | int


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ImageRecord:
    """A decoded image: float32 2-D ``image``, ``spacing`` (row, col) in mm or None, ``meta``."""

    image: np.ndarray
    spacing: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _select_channel(arr: np.ndarray, channel: Channel, path: Path) -> np.ndarray:
    """Reduce an (H, W, C) array to 2-D: 'green' | 'red' | 'blue' | 'gray' | channel index."""
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ImageReadError(path, f"expected a 2-D image, got an array of shape {arr.shape}")
    if arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first TIFF
    c = arr.shape[-1]
    if c == 1:
        return arr[..., 0]
    if c == 2:  # gray + alpha
        return arr[..., 0]
    if c not in (3, 4):
        raise ImageReadError(
            path, f"expected a 2-D or RGB image, got an array of shape {arr.shape}"
        )
    names = {"red": 0, "green": 1, "blue": 2}
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        if not 0 <= int(channel) < c:
            raise ImageReadError(path, f"channel {channel} out of range for {c} channels")
        return arr[..., int(channel)]
    if channel in names:
        return arr[..., names[channel]]
    if channel in ("gray", "grey", "luminance"):
        rgb = arr[..., :3].astype(np.float64)
        return rgb @ np.array([0.299, 0.587, 0.114])
    raise ImageReadError(
        path, f"unknown channel {channel!r} (use 'green', 'gray', 'red', 'blue' or an index)"
    )


def _check(img: np.ndarray, path: Path) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {img.shape}")
    if img.size == 0 or min(img.shape) < 1:
        raise ImageReadError(path, "the image is empty")
    img = img.astype(np.float32, copy=False)
    finite = np.isfinite(img)
    if not finite.all():
        if not finite.any():
            raise ImageReadError(path, "the image holds no finite values (all NaN/inf)")
        raise ImageReadError(
            path, f"the image holds {int((~finite).sum())} NaN/inf values (not a valid image)"
        )
    return img


def _read_dicom(path: Path, channel: Channel) -> ImageRecord:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:  # pragma: no cover - dependency
        raise ImageReadError(path, "pydicom is not installed") from exc
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from exc
    except Exception as exc:
        raise ImageReadError(path, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(path, "the DICOM file holds no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsn = getattr(ts, "name", str(ts))
        raise ImageReadError(
            path, f"cannot decode the pixel data (transfer syntax {tsn}): {exc}"
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise ImageReadError(path, f"multi-frame DICOM ({frames} frames) is not a 2-D image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp > 1:
        # pydicom's decoders already return RGB for YBR photometric interpretations
        arr = _select_channel(arr, channel, path)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == 0.0 and arr.dtype.itemsize <= 2:
        img = np.asarray(arr, dtype=np.float32)  # exact for 8/16-bit data, half the memory
    else:
        img = np.asarray(arr, dtype=np.float64) * slope + intercept
    if photometric == "MONOCHROME1":
        # invert so that brighter always means more attenuation
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lo_raw = -(2 ** (bits - 1)) if signed else 0
        hi_raw = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        lo, hi = sorted((lo_raw * slope + intercept, hi_raw * slope + intercept))
        img = (lo + hi) - img
    spacing = None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        val = ds.get(key)
        if val is not None and len(val) == 2:
            try:
                sp = (float(val[0]), float(val[1]))
            except (TypeError, ValueError):
                continue
            if sp[0] > 0 and sp[1] > 0:
                spacing = sp
                break
    meta: dict[str, Any] = {"format": "dicom"}
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["TransferSyntax"] = getattr(ts, "name", str(ts))
    for kw in SAFE_DICOM_KEYWORDS:
        if kw in ds:
            val = ds.get(kw)
            if val is None or val == "":
                continue
            if isinstance(val, (int, float, str)):
                meta[kw] = val
            else:
                try:
                    meta[kw] = [float(v) for v in val] if hasattr(val, "__len__") else str(val)
                except (TypeError, ValueError):
                    meta[kw] = str(val)
    laterality = meta.get("ImageLaterality") or meta.get("Laterality")
    if laterality:
        meta["laterality"] = str(laterality).upper()
    return ImageRecord(_check(img, path).astype(np.float32), spacing, meta)


def _read_tiff(path: Path, channel: Channel) -> ImageRecord:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            if not tf.pages:
                raise ImageReadError(path, "the TIFF file holds no image")
            page = tf.pages[0]
            arr = tf.series[0].asarray() if tf.series else page.asarray()
            spacing = None
            try:
                xr = page.tags.get("XResolution")
                yr = page.tags.get("YResolution")
                unit = page.tags.get("ResolutionUnit")
                if xr is not None and yr is not None and unit is not None:
                    scale = {2: 25.4, 3: 10.0}.get(int(unit.value))
                    xv, yv = xr.value, yr.value
                    xs = xv[0] / xv[1] if isinstance(xv, tuple) else float(xv)
                    ys = yv[0] / yv[1] if isinstance(yv, tuple) else float(yv)
                    if scale and xs > 0 and ys > 0 and not (xs == 1 and ys == 1):
                        spacing = (scale / ys, scale / xs)
            except Exception:
                spacing = None
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(
            path, f"corrupt or unsupported TIFF ({type(exc).__name__}: {exc})"
        ) from exc
    if arr.ndim > 2:
        arr = arr.reshape([d for d in arr.shape if d != 1] or [1])
    if arr.ndim > 3 or (arr.ndim == 3 and min(arr.shape[0], arr.shape[-1]) > 4):
        raise ImageReadError(path, f"expected a 2-D image, got a stack of shape {arr.shape}")
    img = _select_channel(arr, channel, path)
    return ImageRecord(_check(img, path), spacing, {"format": "tiff", "dtype": str(arr.dtype)})


def _read_raster(path: Path, channel: Channel) -> ImageRecord:
    import imageio.v3 as iio

    try:
        arr = iio.imread(str(path))
    except Exception as exc:
        raise ImageReadError(
            path, f"corrupt or unsupported image ({type(exc).__name__}: {exc})"
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4 and np.all(arr[..., 3] == arr[..., 3].flat[0]):
        arr = arr[..., :3]
    img = _select_channel(arr, channel, path)
    return ImageRecord(
        _check(img, path),
        None,
        {"format": path.suffix.lower().lstrip("."), "dtype": str(arr.dtype)},
    )


def read_image(path: str | os.PathLike, channel: Channel = "green") -> ImageRecord:
    """Read one image file as a float32 2-D array (raw intensities, not normalised).

    DICOM (rescale slope/intercept applied, MONOCHROME1 inverted, compressed transfer
    syntaxes through pydicom's numpy RLE decoder and the pylibjpeg plugins), TIFF (8/16-bit,
    float), PNG and JPEG. Colour images are reduced to ``channel`` ("green" by default, or
    "gray", "red", "blue", or an index). Raises :class:`ImageReadError` naming the file for a
    missing, empty, corrupt, NaN-filled, non-2-D or unsupported file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "no such file")
    if p.is_dir():
        raise ImageReadError(p, "is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "the file is empty (0 bytes)")
    ext = p.suffix.lower()
    if ext in DICOM_EXTS:
        return _read_dicom(p, channel)
    if ext in TIFF_EXTS:
        return _read_tiff(p, channel)
    if ext in RASTER_EXTS:
        return _read_raster(p, channel)
    # no known extension: sniff a DICOM preamble
    with open(p, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return _read_dicom(p, channel)
    raise ImageReadError(
        p, f"unsupported file type {ext or '(no extension)'} (use {', '.join(sorted(IMAGE_EXTS))})"
    )
