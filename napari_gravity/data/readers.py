"""Image readers: DICOM, TIFF, PNG/JPEG → a float32 2-D image, pixel spacing and safe metadata.

Patient-identifying DICOM tags are never copied into ``meta`` (nor logged or exported).

Every reader checks the pixel count the file's header claims (DICOM Rows × Columns × frames,
TIFF series shape, PNG/JPEG size) against :data:`DEFAULT_MAX_PIXELS` BEFORE decoding, so a
small hostile file (a decompression bomb) cannot exhaust the memory. Override with
``read_image(..., max_pixels=N)`` or the environment variable ``GRAVITY_MAX_PIXELS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.core.task import is_colour

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

#: Largest image (pixels: rows × columns × frames; colour samples not counted) read without an
#: explicit override: 60 million (e.g. 7745 × 7745; a 4084 × 3328 INbreast mammogram is 13.6
#: million, a 24-megapixel fundus photograph 24 million). Peak memory at the cap stays < 1 GB.
DEFAULT_MAX_PIXELS = 60_000_000
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "GRAVITY_MAX_PIXELS"
#: Smallest accepted image side (pixels): a 1×1 or 3×3 "image" is a broken file.
MIN_SIDE = 4


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ImageRecord:
    """A decoded image: float32 2-D ``image``, ``spacing`` (row, col) in mm or None, ``meta``;
    for a colour photograph also ``fov_source``: its brightest channel per pixel (as stored), where
    a fundus field of view stands out from a grey border even when the green channel does not
    (``data.masks.tissue_mask`` uses it)."""

    image: np.ndarray
    spacing: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fov_source: np.ndarray | None = None


def _fov_source(arr: np.ndarray, colour: bool) -> np.ndarray | None:
    """The brightest colour channel per pixel of a colour photograph (``colour``: its
    ``is_colour``), in its own dtype; None for a grey image."""
    if not colour or arr.ndim != 3:
        return None
    if arr.shape[-1] not in (3, 4) and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.shape[-1] == 4:
        arr = _flatten_alpha(arr)
    return np.asarray(arr[..., :3]).max(axis=-1)


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
    named = not (isinstance(channel, (int, np.integer)) and not isinstance(channel, bool))
    if c in (2, 4) and named:  # grey / RGB + alpha: transparency flattened onto black
        arr, c = _flatten_alpha(arr), c - 1
    if c == 1:
        return arr[..., 0]
    if c == 2:  # gray + alpha, a channel asked for by index
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
        rgb = arr[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    raise ImageReadError(
        path, f"unknown channel {channel!r} (use 'green', 'gray', 'red', 'blue' or an index)"
    )


def _flatten_alpha(arr: np.ndarray) -> np.ndarray:
    """The colour channels of an (H, W, C + alpha) array composited onto black, so that a
    transparent surround (of whatever colour it hides) reads as dark as a camera's or a
    detector's; a constant alpha is simply dropped."""
    alpha = arr[..., -1].astype(np.float32)
    top = float(alpha.max())
    if top <= 0 or float(alpha.min()) == top:
        return arr[..., :-1]
    return arr[..., :-1].astype(np.float32) * (alpha / top)[..., None]


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels``, else ``$GRAVITY_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            val = int(float(env))
        except ValueError:
            raise ValueError(f"${MAX_PIXELS_ENV}={env!r} is not a number of pixels") from None
        if val < 1:
            raise ValueError(f"${MAX_PIXELS_ENV}={env!r} must be a positive number of pixels")
        return val
    return DEFAULT_MAX_PIXELS


def _check_size(path: Path, dims: tuple[int, ...], what: str, limit: int, samples: int = 1) -> None:
    """Refuse an image whose header claims more than ``limit`` pixels (``prod(dims) / samples``;
    colour samples are not counted) or more than 4 samples per pixel, before decoding it."""
    if samples > 4:
        raise ImageReadError(path, f"{what} claims {samples} samples per pixel (at most 4)")
    n = 1
    for d in dims:
        n *= max(int(d), 0)
    n //= max(int(samples), 1)
    if n > limit:
        shown = " x ".join(str(int(d)) for d in dims)
        raise ImageReadError(
            path,
            f"{what} claims {shown} = {n:,} pixels, more than the limit of {limit:,} "
            f"(a corrupt or hostile file?); if the image is genuine, raise the limit with "
            f"{MAX_PIXELS_ENV}=N or read_image(..., max_pixels=N)",
        )


def _check(img: np.ndarray, path: Path) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {img.shape}")
    if img.size == 0 or min(img.shape) < 1:
        raise ImageReadError(path, "the image is empty")
    if min(img.shape) < MIN_SIDE:
        raise ImageReadError(
            path,
            f"the image is only {img.shape[0]}x{img.shape[1]} pixels "
            f"(at least {MIN_SIDE}x{MIN_SIDE} needed)",
        )
    img = img.astype(np.float32, copy=False)
    finite = np.isfinite(img)
    if not finite.all():
        if not finite.any():
            raise ImageReadError(path, "the image holds no finite values (all NaN/inf)")
        raise ImageReadError(
            path, f"the image holds {int((~finite).sum())} NaN/inf values (not a valid image)"
        )
    return img


def _check_deflated_dicom(path: Path, limit: int) -> None:
    """A *Deflated* DICOM is inflated whole by pydicom before any tag can be read: measure the
    inflated size first (in small chunks, keeping nothing) and refuse a bomb."""
    import zlib

    try:
        from pydicom.filereader import read_file_meta_info

        meta = read_file_meta_info(str(path))
        ts = str(meta.get("TransferSyntaxUID", ""))
    except Exception:
        return  # not a DICOM with file meta: dcmread reports it
    if ts != "1.2.840.10008.1.2.1.99":
        return
    budget = 4 * limit + (64 << 20)  # 4 bytes per pixel of the cap + 64 MiB of other tags
    dec = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        # the deflated data follow the (uncompressed) file meta group: find its end exactly as
        # pydicom does (it reads group 0002 elements, not trusting the group length), falling
        # back on (0002,0000) FileMetaInformationGroupLength if that helper is not available
        head = fh.read(132)
        start = 132 if head[128:132] == b"DICM" else 0
        fh.seek(start)
        try:
            from pydicom.filereader import _read_file_meta_info
        except ImportError:  # pragma: no cover - pydicom internals moved
            group_length = meta.get("FileMetaInformationGroupLength")
            if group_length is None:
                raise ImageReadError(
                    path, "a Deflated DICOM whose file meta group cannot be measured"
                ) from None
            fh.seek(start + 12 + int(group_length))
        else:
            try:
                _read_file_meta_info(fh)
            except Exception as exc:
                raise ImageReadError(path, f"corrupt DICOM file meta group ({exc})") from None
        while True:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            try:
                out = dec.decompress(chunk, 1 << 20)
                total += len(out)
                while dec.unconsumed_tail and total <= budget:
                    out = dec.decompress(dec.unconsumed_tail, 1 << 20)
                    total += len(out)
            except zlib.error as exc:
                raise ImageReadError(path, f"corrupt Deflated DICOM data ({exc})") from None
            if total > budget:
                raise ImageReadError(
                    path,
                    f"the Deflated DICOM inflates to more than {budget:,} bytes, more than the "
                    f"pixel limit of {limit:,} allows (a decompression bomb?); if the image is "
                    f"genuine, raise the limit with {MAX_PIXELS_ENV}=N",
                )


def _read_dicom(path: Path, channel: Channel, limit: int) -> ImageRecord:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:  # pragma: no cover - dependency
        raise ImageReadError(path, "pydicom is not installed") from exc
    _check_deflated_dicom(path, limit)
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from exc
    except Exception as exc:
        raise ImageReadError(path, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(path, "the DICOM file holds no pixel data")
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt DICOM image size tags ({exc})") from None
    if rows < 1 or cols < 1:
        raise ImageReadError(
            path, f"the DICOM header gives no image size (Rows {rows}, Columns {cols})"
        )
    if frames < 1 or spp < 1:
        raise ImageReadError(
            path, f"corrupt DICOM header (NumberOfFrames {frames}, SamplesPerPixel {spp})"
        )
    _check_size(
        path,
        (rows, cols, frames),
        "the DICOM header (Rows x Columns x frames)",
        limit,
    )
    if spp > 4:
        raise ImageReadError(path, f"the DICOM header claims {spp} samples per pixel (at most 4)")
    if frames > 1:
        raise ImageReadError(path, f"multi-frame DICOM ({frames} frames) is not a 2-D image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsn = getattr(ts, "name", str(ts))
        raise ImageReadError(
            path, f"cannot decode the pixel data (transfer syntax {tsn}): {exc}"
        ) from exc
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            del ds[kw]  # the encoded bytes are no longer needed: free them before converting
    if arr.ndim < 2 or arr.shape[0] != rows or arr.shape[1] != cols:
        raise ImageReadError(
            path, f"decoded pixel array {arr.shape} does not match Rows x Columns {rows}x{cols}"
        )
    if photometric == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise ImageReadError(
                path, f"PALETTE COLOR image whose colour palette cannot be applied ({exc})"
            ) from None
        spp = 3
    if spp > 1:
        # pydicom's decoders already return RGB for YBR photometric interpretations
        arr = _select_channel(arr, channel, path)
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"invalid RescaleSlope/RescaleIntercept ({exc})") from None
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise ImageReadError(
            path, f"invalid rescale: RescaleSlope {slope}, RescaleIntercept {intercept}"
        )
    # float32 throughout (the result is float32 anyway): exact for 8/16-bit raw values, and no
    # float64 copy of a large image
    img = np.asarray(arr, dtype=np.float32)
    del arr
    if slope != 1.0:
        img *= np.float32(slope)
    if intercept != 0.0:
        img += np.float32(intercept)
    if photometric == "MONOCHROME1":
        # invert so that brighter always means more attenuation
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lo_raw = -(2 ** (bits - 1)) if signed else 0
        hi_raw = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        lo, hi = sorted((lo_raw * slope + intercept, hi_raw * slope + intercept))
        img = np.subtract(np.float32(lo + hi), img, out=img)
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
    return ImageRecord(_check(img, path), spacing, meta)


def _read_tiff(path: Path, channel: Channel, limit: int) -> ImageRecord:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            if not tf.pages:
                raise ImageReadError(path, "the TIFF file holds no image")
            page = tf.pages[0]
            series = tf.series[0] if tf.series else None
            shape = tuple(int(d) for d in (series.shape if series is not None else page.shape))
            spp = int(getattr(page, "samplesperpixel", 1) or 1)
            _check_size(path, shape, "the TIFF header", limit, spp)
            squeezed = [d for d in shape if d != 1]
            if len(squeezed) > 3 or (len(squeezed) == 3 and min(squeezed[0], squeezed[-1]) > 4):
                raise ImageReadError(
                    path, f"expected a 2-D image, got a stack of shape {tuple(shape)}"
                )
            arr = series.asarray() if series is not None else page.asarray()
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
    colour = is_colour(arr)
    meta = {"format": "tiff", "dtype": str(arr.dtype), "colour": colour}
    return ImageRecord(_check(img, path), spacing, meta, _fov_source(arr, colour))


def _raster_header(path: Path, limit: int) -> None:
    """Check a PNG/JPEG/BMP's size from its header (Pillow reads only the header here)."""
    import warnings

    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own cap below, with our own message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(str(path)) as im:
                w, h = im.size
                bands = len(im.getbands())
    except Exception as exc:
        raise ImageReadError(
            path, f"corrupt or unsupported image ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    _check_size(
        path, (h, w), "the image header (height x width)", limit, 1 if bands <= 4 else bands
    )


def _read_raster(path: Path, channel: Channel, limit: int) -> ImageRecord:
    import imageio.v3 as iio

    _raster_header(path, limit)
    try:
        arr = iio.imread(str(path), index=0)
    except Exception as exc:
        raise ImageReadError(
            path, f"corrupt or unsupported image ({type(exc).__name__}: {exc})"
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4 and np.all(arr[..., 3] == arr[..., 3].flat[0]):
        arr = arr[..., :3]
    colour = is_colour(arr)
    img = _select_channel(arr, channel, path)
    return ImageRecord(
        _check(img, path),
        None,
        {"format": path.suffix.lower().lstrip("."), "dtype": str(arr.dtype), "colour": colour},
        _fov_source(arr, colour),
    )


def read_image(
    path: str | os.PathLike, channel: Channel = "green", *, max_pixels: int | None = None
) -> ImageRecord:
    """Read one image file as a float32 2-D array (raw intensities, not normalised).

    DICOM (rescale slope/intercept applied, MONOCHROME1 inverted, compressed transfer
    syntaxes through pydicom's numpy RLE decoder and the pylibjpeg plugins), TIFF (8/16-bit,
    float), PNG and JPEG. Colour images are reduced to ``channel`` ("green" by default, or
    "gray", "red", "blue", or an index). Raises :class:`ImageReadError` naming the file for a
    missing, empty, corrupt, NaN-filled, non-2-D, tiny (< 4 px a side) or unsupported file, and
    for one whose header claims more than ``max_pixels`` pixels (default ``$GRAVITY_MAX_PIXELS``
    or :data:`DEFAULT_MAX_PIXELS`), checked before any pixel is decoded.
    """
    limit = max_pixels_limit(max_pixels)
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "no such file")
    if p.is_dir():
        raise ImageReadError(p, "is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "the file is empty (0 bytes)")
    ext = p.suffix.lower()
    if ext in DICOM_EXTS:
        return _read_dicom(p, channel, limit)
    if ext in TIFF_EXTS:
        return _read_tiff(p, channel, limit)
    if ext in RASTER_EXTS:
        return _read_raster(p, channel, limit)
    # no known extension: sniff a DICOM preamble
    with open(p, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return _read_dicom(p, channel, limit)
    raise ImageReadError(
        p, f"unsupported file type {ext or '(no extension)'} (use {', '.join(sorted(IMAGE_EXTS))})"
    )
