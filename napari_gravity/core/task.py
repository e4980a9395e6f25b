"""Which task an image belongs to — microcalcifications ("mc") or microaneurysms ("ma") —
and which bundled default model fits it.

The rule is deliberately simple and explainable (:func:`guess_task` returns the reason too):

1. a DICOM whose Modality is MG (mammography) → ``mc``;
2. a colour photograph (RGB array, or metadata saying it had several channels) whose channels
   differ (a fundus photograph is red-dominant) → ``ma``;
3. a grey image whose bright region is a round field of view (a disk inside a dark surround,
   as in a fundus photograph) → ``ma``;
4. anything else (grey, 10-16-bit, a breast against air or a tissue patch) → ``mc``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TASKS = ("mc", "ma")
DEFAULT_MODELS = {"mc": "default_mc", "ma": "default_ma"}


def _is_colour(image: np.ndarray) -> bool:
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        return False
    rgb = image[..., :3].astype(np.float32)
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    rgb = rgb[::step, ::step]
    spread = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    return bool(spread > 0.02 * (float(rgb.max()) - float(rgb.min()) + 1e-9))


def _round_fov(image: np.ndarray) -> bool:
    """A bright disk-shaped field of view inside a dark surround (fundus camera)."""
    g = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(g.size / 65536)))
    g = g[::step, ::step]
    lo, hi = np.percentile(g, [1, 99])
    if not hi > lo:
        return False
    fov = g > lo + 0.1 * (hi - lo)
    frac = fov.mean()
    if not 0.3 < frac < 0.9:  # no dark surround, or mostly dark
        return False
    rows, cols = np.flatnonzero(fov.any(1)), np.flatnonzero(fov.any(0))
    bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    # a disk fills pi/4 of its bounding box and does not touch the image's left/right border
    fill = fov[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].mean()
    touches_side = cols[0] == 0 or cols[-1] == fov.shape[1] - 1
    return bool(0.7 < fill < 0.87 and 0.75 < bh / bw < 1.33 and not touches_side)


def guess_task(image: np.ndarray, meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(task, reason)`` for an image as read (2-D grey, or (H, W, 3|4) colour).

    ``meta`` is the reader's metadata (``napari_gravity.data.readers.ImageRecord.meta``);
    its ``Modality`` and ``colour`` (the file held differing colour channels) keys are used
    when present.
    """
    meta = meta or {}
    image = np.asarray(image)
    if str(meta.get("Modality", "")).upper() == "MG":
        return "mc", "DICOM modality MG (mammography)"
    if _is_colour(image):
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
