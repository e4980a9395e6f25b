"""Evaluation: lesion-based FROC, AUFROC, bootstrap statistics, reports and plots.

Main entry points: :func:`froc_curve`, :func:`evaluate_detections`, :func:`bootstrap_froc`,
:func:`compare_bootstrap`; CSV I/O in :mod:`napari_gravity.evaluation.io`.
"""

from napari_gravity.evaluation.bootstrap import (
    BootstrapResult,
    PairedComparison,
    bootstrap_froc,
    compare_bootstrap,
    resample_weights,
)
from napari_gravity.evaluation.froc import (
    DEFAULT_SENSITIVITY_FPPI,
    EvaluationError,
    FROCResult,
    ImageMatch,
    aufroc,
    curve_value,
    froc_curve,
    match_image,
    partial_area,
    sensitivity_at,
)
from napari_gravity.evaluation.report import build_report, evaluate_detections, report_markdown

__all__ = [
    "DEFAULT_SENSITIVITY_FPPI",
    "BootstrapResult",
    "EvaluationError",
    "FROCResult",
    "ImageMatch",
    "PairedComparison",
    "aufroc",
    "bootstrap_froc",
    "build_report",
    "compare_bootstrap",
    "curve_value",
    "evaluate_detections",
    "froc_curve",
    "match_image",
    "partial_area",
    "report_markdown",
    "resample_weights",
    "sensitivity_at",
]
