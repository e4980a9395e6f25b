"""Validation with exactly the post-processing used at prediction time.

Every validation image goes through the core ``Predictor`` (normalisation, padding, decoding,
NMS, mask) with a low threshold, and the detections are scored with the evaluation package's
lesion-based FROC. The RetinaNet comparator plugs in through the same ``detect`` interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_gravity.types import Detections


@dataclass
class ValResult:
    aufroc: float
    sensitivity: dict[float, float]
    threshold_at_target: float
    target_fppi: float
    n_images: int
    n_lesions: int
    froc: Any = None  # evaluation FROCResult (not serialised)
    detections: dict[str, Detections] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "aufroc": self.aufroc,
            "sensitivity": {str(k): v for k, v in self.sensitivity.items()},
            "threshold_at_target": self.threshold_at_target,
            "target_fppi": self.target_fppi,
            "n_images": self.n_images,
            "n_lesions": self.n_lesions,
        }


def detect_all(
    detector: Any, images: list[Any], min_score: float, progress: bool = False
) -> dict[str, Detections]:
    """Run ``detector.detect(raw_image, mask=, threshold=)`` over prepared images (raw kept)."""
    from tqdm.auto import tqdm

    out: dict[str, Detections] = {}
    for p in tqdm(images, desc="validate", leave=False, disable=not progress):
        img = p.raw if p.raw is not None else p.image
        out[p.image_id] = detector.detect(img, mask=p.mask, threshold=min_score)
    return out


def score(
    detections: dict[str, Detections],
    images: list[Any],
    max_fppi: float = 10.0,
    target_fppi: float = 1.0,
) -> ValResult:
    """FROC of detections against the prepared images' lesions."""
    from napari_gravity.evaluation.froc import froc_curve

    gt = {p.image_id: (p.points, p.radii) for p in images}
    masks = {p.image_id: p.mask for p in images if p.mask is not None}
    n_les = int(sum(len(p.points) for p in images))
    if n_les == 0:
        return ValResult(0.0, {}, 1.0, target_fppi, len(images), 0)
    res = froc_curve(detections, gt, [p.image_id for p in images], masks=masks or None)
    thr = res.threshold_at(target_fppi)
    if not np.isfinite(thr):  # no operating point at or below the target: be strict
        thr = 1.0
    return ValResult(
        aufroc=res.aufroc(max_fppi),
        sensitivity=res.sensitivity_at(),
        threshold_at_target=float(thr),
        target_fppi=target_fppi,
        n_images=len(images),
        n_lesions=n_les,
        froc=res,
        detections=detections,
    )
