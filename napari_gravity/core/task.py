"""Which task an image belongs to — microcalcifications ("mc") or microaneurysms ("ma") —
and which bundled default model fits it.

The rule is deliberately simple and explainable (:func:`guess_task` returns the reason too):

1. a DICOM whose Modality is MG (mammography) → ``mc``; OP (ophthalmic photography) → ``ma``;
2. a colour photograph (RGB array, or metadata saying it had several channels) whose channels
   differ (a fundus photograph is red-dominant) → ``ma``;
3. a grey image whose bright region is a round field of view (a disk inside a dark surround,
   as in a fundus photograph, whole or clipped at the top and bottom) → ``ma``;
4. anything else (grey, 10-16-bit, a breast against air or a tissue patch) → ``mc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("mc", "ma")
DEFAULT_MODELS = {"mc": "default_mc", "ma": "default_ma"}


def is_colour(image: np.ndarray) -> bool:
    """An (H, W, 3|4) array whose colour channels differ (mean |R−G| + |G−B| above 2 % of its
    range): a photograph, not a grey image stored as RGB (even JPEG-compressed)."""
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        return False
    rgb = image[..., :3].astype(np.float32)
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    rgb = rgb[::step, ::step]
    spread = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    return bool(spread > 0.02 * (float(rgb.max()) - float(rgb.min()) + 1e-9))


def _round_fov(image: np.ndarray) -> bool:
    """A bright disk-shaped field of view inside a dark surround (fundus camera), whole or
    clipped at the top and bottom as most cameras write it."""
    from scipy import ndimage as ndi

    from .fov import fit_circle

    g = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(g.size / 65536)))
    g = g[::step, ::step]
    lo, hi = np.percentile(g, [1, 99])
    if not hi > lo:
        return False
    fov = ndi.binary_fill_holes(g > lo + 0.1 * (hi - lo))
    frac = fov.mean()
    if not 0.3 < frac < 0.95:  # no dark surround, or mostly dark
        return False
    cols = np.flatnonzero(fov.any(0))
    if cols[0] == 0 or cols[-1] == fov.shape[1] - 1:  # a breast meets the chest-wall side
        return False
    circle = fit_circle(fov)
    if circle is None:
        return False
    cy, cx, r = circle
    yy, xx = np.ogrid[: fov.shape[0], : fov.shape[1]]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    # the bright region is that disk (as far as the image shows it), not an oval or a half-disk
    iou = (fov & disk).sum() / max(1, (fov | disk).sum())
    shown = disk.sum() / (np.pi * r * r)  # how much of the disk lies inside the image
    return bool(iou > 0.9 and shown > 0.6)


def guess_task(image: np.ndarray, meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(task, reason)`` for an image as read (2-D grey, or (H, W, 3|4) colour).

    ``meta`` is the reader's metadata (``napari_gravity.data.readers.ImageRecord.meta``);
    its ``Modality`` and ``colour`` (the file held differing colour channels) keys are used
    when present.
    """
    meta = meta or {}
    image = np.asarray(image)
    modality = str(meta.get("Modality", "")).upper()
    if modality == "MG":
        return "mc", "DICOM modality MG (mammography)"
    if modality == "OP":
        return "ma", "DICOM modality OP (ophthalmic photography)"
    if is_colour(image):
        return "ma", "colour photograph (fundus)"
    if meta.get("colour"):
        return "ma", "colour photograph (fundus), one channel read"
    grey = image if image.ndim == 2 else image[..., 1] if image.ndim == 3 else None
    if grey is not None and grey.size and _round_fov(grey):
        return "ma", "round field of view (fundus camera)"
    return "mc", "grey image without a round field of view (mammogram)"


def default_model_for(image: np.ndarray, meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(bundled model name, reason)`` for an image: ``default_mc`` or ``default_ma``."""
    task, why = guess_task(image, meta)
    return DEFAULT_MODELS[task], why


def guess_task_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(task, reason)`` for an image file, from its header and a small thumbnail only
    (cheap enough to route every file of a folder before reading it in full).

    DICOM: Modality MG → ``mc``, OP → ``ma``, several samples per pixel → ``ma``; PNG / JPEG / TIFF:
    a colour thumbnail whose channels differ → ``ma``, a grey one with a round field of view
    → ``ma``; anything else → ``mc``. Unreadable headers fall back to ``mc`` (the reader
    reports the real problem when the file is read).
    """
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext in (".dcm", ".dicom", "") or ext not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            import pydicom

            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=True)
            modality = str(ds.get("Modality", "")).upper()
            if modality == "MG":
                return "mc", "DICOM modality MG (mammography)"
            if modality == "OP":
                return "ma", "DICOM modality OP (ophthalmic photography)"
            if int(ds.get("SamplesPerPixel", 1) or 1) >= 3:
                return "ma", "colour DICOM (fundus photograph)"
            return "mc", "grey DICOM"
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(p)) as tf:
                page = tf.pages[0]
                if int(np.prod(page.shape)) > 64_000_000:  # never decode a huge page here
                    return "mc", "large TIFF (mammogram assumed)"
                return guess_task(_tiff_thumbnail(page))
        from PIL import Image

        with Image.open(str(p)) as im:
            if im.mode.startswith(("I", "F")):  # 16-bit / 32-bit grey: Pillow cannot shrink it
                arr = np.asarray(im)
                step = max(1, max(arr.shape[:2]) // 512)
                arr = arr[::step, ::step]
            else:
                rgb_like = im.mode in ("RGB", "RGBA", "YCbCr", "CMYK")
                im.draft("RGB" if rgb_like else im.mode, (512, 512))
                im.thumbnail((512, 512))
                arr = np.asarray(im if im.mode == "L" else im.convert("RGB"))
        return guess_task(arr.astype(np.float32))
    except Exception:
        return "mc", "task not recognisable from the file header (mammogram assumed)"


def _tiff_thumbnail(page: Any) -> np.ndarray:
    arr = np.asarray(page.asarray())
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    step = max(1, int(max(arr.shape[:2]) // 512))
    return arr[::step, ::step].astype(np.float32)
