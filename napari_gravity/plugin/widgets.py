"""The plugin's dock widgets (contributed in napari.yaml)."""

from ._detect_widget import DetectWidget
from ._evaluate_widget import EvaluateWidget
from ._retrain_widget import RetrainWidget
from ._review_widget import ReviewWidget

__all__ = ["DetectWidget", "EvaluateWidget", "RetrainWidget", "ReviewWidget"]
