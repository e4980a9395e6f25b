"""Detectors behind one interface: ``detect(image, mask=None) -> Detections``.

Classical candidate generators (no training needed; also the GUI's "candidate points" when no
model exists): :class:`HessianDoG` (paper 003) and :class:`TopHat` (paper 002). GravityNet's
``Predictor`` satisfies the same :class:`Detector` protocol.
"""

from napari_gravity.detectors.base import Detector
from napari_gravity.detectors.hdog import HessianDoG
from napari_gravity.detectors.tophat import TopHat

BASELINES = {"hessian-dog": HessianDoG, "top-hat": TopHat}

__all__ = ["BASELINES", "Detector", "HessianDoG", "TopHat"]
