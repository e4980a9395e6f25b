"""Evaluation reports: a JSON-able dict, a Markdown table, and the one-call entry point
:func:`evaluate_detections` used by the trainer's validation and the GUI."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.evaluation.bootstrap import BootstrapResult, PairedComparison, bootstrap_froc
from napari_gravity.evaluation.froc import (
    DEFAULT_SENSITIVITY_FPPI,
    FROCResult,
    curve_value,
    froc_curve,
    partial_area,
)
from napari_gravity.types import Detections, Sample

REPORT_VERSION = 1
CM2_FP = (0.2, 0.4, 1.0)  # FP/cm² values reported when pixel spacing is known


def _key(f: float) -> str:
    return f"{float(f):g}"


def _finite_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def build_report(
    result: FROCResult,
    *,
    name: str = "method",
    max_fppi: float = 10.0,
    sensitivity_fppi: Iterable[float] = DEFAULT_SENSITIVITY_FPPI,
    bootstrap: BootstrapResult | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """JSON-able report of one method: ``aufroc``, ``sensitivity_at``, ``fppi``, ``tpr``,
    ``thresholds`` (the first, +inf, is written as null), ``counts``, ``bootstrap``, ..."""
    sens = result.sensitivity_at(sensitivity_fppi)
    rep: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "method": name,
        "max_fppi": float(max_fppi),
        "aufroc": result.aufroc(max_fppi),
        "sensitivity_at": {_key(k): v for k, v in sens.items()},
        "counts": dict(result.counts),
        "settings": dict(result.settings),
        "fppi": _finite_list(result.fppi),
        "tpr": _finite_list(result.tpr),
        "thresholds": _finite_list(result.thresholds),
        "notes": list(notes),
    }
    fpc = result.fp_per_cm2
    if fpc is not None:
        rep["area_cm2"] = result.area_cm2
        rep["fp_per_cm2"] = _finite_list(fpc)
        # paper 003's summaries: TPR at 0.4 FP/cm², normalised partial area over 0-1 FP/cm²
        rep["per_cm2"] = {
            "sensitivity_at": {
                _key(f): float(v)
                for f, v in zip(CM2_FP, curve_value(fpc, result.tpr, CM2_FP), strict=True)
            },
            "pauc_1": float(partial_area(fpc, result.tpr, 1.0)),
        }
    rep["bootstrap"] = bootstrap.to_dict() if bootstrap is not None else None
    return rep


def comparison_dict(cmp: PairedComparison, name_a: str, name_b: str) -> dict[str, Any]:
    """JSON-able paired statistics (ΔAUFROC = A − B)."""
    d = cmp.to_dict()
    d["a"] = name_a
    d["b"] = name_b
    return d


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{100 * v:.2f}" if pct else f"{v:g}"


def report_markdown(
    reports: Sequence[Mapping[str, Any]], comparison: Mapping[str, Any] | None = None
) -> str:
    """Markdown table of one or several method reports (values in %)."""
    if not reports:
        return ""
    g = reports[0]["max_fppi"]
    fppis = list(reports[0]["sensitivity_at"].keys())
    head = ["method", f"AUFROC_{_fmt(g, False)} %", "95% CI"] + [f"TPR@{f} FPpI %" for f in fppis]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        b = r.get("bootstrap")
        ci = "—"
        if b:
            lo, hi = b["aufroc_ci"]
            ci = f"{_fmt(lo)}–{_fmt(hi)}"
        row = [str(r["method"]), _fmt(r["aufroc"]), ci]
        for f in fppis:
            v = _fmt(r["sensitivity_at"].get(f))
            if b and f in b.get("sensitivity_at", {}):
                lo, hi = b["sensitivity_at"][f]["ci"]
                v += f" ({_fmt(lo)}–{_fmt(hi)})"
            row.append(v)
        lines.append("| " + " | ".join(row) + " |")
    out = ["\n".join(lines)]
    c0 = reports[0]["counts"]
    s0 = reports[0]["settings"]
    out.append(
        f"\n{c0['images']} images ({c0['lesion_free_images']} lesion-free), {c0['lesions']} lesions; "
        f"match = {s0['match']}, duplicates = {s0['duplicates']}, FPs counted on "
        f"{'all images' if s0['fp_images'] == 'all' else 'lesion-free images only'}."
    )
    for r in reports:
        c = r["counts"]
        out.append(
            f"- {r['method']}: {c['predictions']} predictions, {c['tp']} TP, {c['fp']} FP "
            f"({c['duplicates']} duplicates, {c['ignored_outside_mask']} outside the mask)"
        )
    if comparison:
        lo, hi = comparison["delta_ci"]
        out.append(
            f"\nPaired bootstrap ({comparison['n_resamples']} resamples, seed {comparison['seed']}): "
            f"ΔAUFROC ({comparison['a']} − {comparison['b']}) = {_fmt(comparison['delta_aufroc'])} % "
            f"(95% CI {_fmt(lo)} to {_fmt(hi)}), p = {comparison['p_value']:.3f} "
            f"(fraction of resamples with Δ ≤ 0)."
        )
    notes = [n for r in reports for n in r.get("notes", [])]
    for n in dict.fromkeys(notes):
        out.append(f"\nNote: {n}")
    return "\n".join(out) + "\n"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars/arrays -> Python (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (NaN/inf as null), atomically."""
    from napari_gravity.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=1, allow_nan=False) + "\n")


def evaluate_detections(
    detections: Mapping[str, Detections] | Sequence[Detections],
    samples: Mapping[str, Sample] | Sequence[Sample],
    *,
    match: str | float = "bbox",
    max_fppi: float = 10.0,
    sensitivity_fppi: Iterable[float] = DEFAULT_SENSITIVITY_FPPI,
    duplicates: str = "fp",
    use_masks: bool = True,
    fp_images: str = "all",
    bootstrap: int = 0,
    seed: int = 0,
    name: str = "method",
    return_result: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], FROCResult]:
    """Evaluate detections against annotated samples; returns the report dict.

    ``detections``: {image_id: Detections} or a list aligned with ``samples``. Every sample is
    an evaluated image (lesion-free ones count). With ``use_masks``, sample masks drop
    predictions outside the tissue; with pixel spacing (mm) on every sample, FP per cm² is
    reported too. ``bootstrap`` > 0 adds bootstrap statistics.
    """
    if isinstance(samples, Mapping):
        sample_map = {str(k): v for k, v in samples.items()}
    else:
        sample_map = {}
        for k, s in enumerate(samples):
            iid = s.image_id or f"image_{k}"
            if iid in sample_map:
                raise ValueError(f"two samples share the image id {iid!r}")
            sample_map[iid] = s
    if isinstance(detections, Mapping):
        det_map = {str(k): v for k, v in detections.items()}
    else:
        if len(detections) != len(sample_map):
            raise ValueError(f"{len(detections)} detection sets for {len(sample_map)} samples")
        det_map = dict(zip(sample_map, detections, strict=True))
    masks = {}
    if use_masks:
        masks = {k: s.mask for k, s in sample_map.items() if s.mask is not None}
    areas = None
    if all(s.spacing for s in sample_map.values()):
        areas = {}
        for k, s in sample_map.items():
            px = (
                float(np.count_nonzero(s.mask))
                if (use_masks and s.mask is not None)
                else float(np.prod(s.image.shape[:2]))
            )
            areas[k] = px * s.spacing[0] * s.spacing[1] / 100.0  # mm² -> cm²
    res = froc_curve(
        det_map,
        sample_map,
        list(sample_map),
        match=match,
        duplicates=duplicates,
        masks=masks or None,
        fp_images=fp_images,
        areas_cm2=areas,
    )
    sens = list(sensitivity_fppi)
    boot = (
        bootstrap_froc(res, bootstrap, seed, max_fppi=max_fppi, sensitivity_fppi=sens)
        if bootstrap
        else None
    )
    rep = build_report(res, name=name, max_fppi=max_fppi, sensitivity_fppi=sens, bootstrap=boot)
    return (rep, res) if return_result else rep
