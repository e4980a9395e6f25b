"""Records shared by every layer: an annotated image and a set of detections."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _points(a: object) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    return arr


@dataclass
class Sample:
    """One image with its lesions.

    ``image`` is a 2-D float32 array of raw intensities (not normalised);
    ``points`` are (y, x) lesion centres in pixels, ``radii`` lesion radii in pixels.
    """

    image: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    radii: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    mask: np.ndarray | None = None
    image_id: str = ""
    patient_id: str = ""
    spacing: tuple[float, float] | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        self.points = _points(self.points)
        self.radii = np.asarray(self.radii, dtype=np.float64).reshape(-1)
        if len(self.radii) != len(self.points):
            raise ValueError(
                f"{self.image_id or 'sample'}: {len(self.points)} points but {len(self.radii)} radii"
            )


@dataclass
class Detections:
    """Detected lesion centres (y, x) in pixels with a score in [0, 1] each; a GravityNet
    ``Predictor`` also records the γ they were selected at (``threshold``) and its test-time
    augmentation mode (``tta``: "off", "flips" or "d8") and the zoom the image was resampled by
    to the model's field-of-view scale (``zoom``, network pixels per image pixel; the points
    are in the image's pixels)."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    threshold: float | None = None
    tta: str | None = None
    zoom: float = 1.0

    def __post_init__(self) -> None:
        self.points = _points(self.points)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.scores) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.scores)
