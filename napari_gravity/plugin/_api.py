"""Adapters between the docks and the Qt-free packages (core, data, detectors, evaluation).

Only what needs adapting lives here: detectors behind one protocol (``raw(image, progress)``
gives candidates whose ``select(γ, box, iou, mask)`` re-applies the post-processing without a
network run), point tables with features, and FROC on plain point sets. Everything else the
docks import from its home. Imports are lazy so the reader and the manifest stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._torch import block_triton_in_gui

DEFAULT_PARAMS = {"threshold": 0.5, "nms_box": 7.0, "nms_iou": 0.5}

# --------------------------------------------------------------------------- points


@dataclass
class PointTable:
    """Points read from a file: (y, x), radii and a features frame."""

    points: np.ndarray
    radii: np.ndarray
    features: pd.DataFrame

    def lesions(self, default_radius: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        """Points and radii of the rows that are lesions (not ``pending`` / ``rejected``)."""
        keep = np.ones(len(self.points), bool)
        if "status" in self.features:
            keep = ~self.features["status"].isin(("pending", "rejected")).to_numpy()
        radii = np.where(np.isfinite(self.radii) & (self.radii > 0), self.radii, default_radius)
        return self.points[keep], radii[keep]


def read_points_csv(path: str | os.PathLike) -> PointTable:
    """The data layer's points CSV, with its extra columns as features (``score`` numeric)."""
    from napari_gravity.data import annotations

    obj = annotations.read_points_csv(path)
    pts = np.asarray(obj.points, dtype=float).reshape(-1, 2)
    feats = pd.DataFrame({k: list(v) for k, v in (obj.extra or {}).items()})
    if len(feats) != len(pts):
        feats = pd.DataFrame(index=range(len(pts)))
    if "score" in feats:
        feats["score"] = pd.to_numeric(feats["score"], errors="coerce")
    return PointTable(pts, np.asarray(obj.radii, float).reshape(-1), feats.reset_index(drop=True))


def write_points_csv(path, points, radii=None, features: pd.DataFrame | None = None) -> Path:
    """Atomic write of our CSV (``y,x,radius[,score,source,status]``) by the data layer."""
    from napari_gravity.data import annotations

    feats = pd.DataFrame() if features is None else features
    cols = {c: feats[c].tolist() for c in ("score", "source", "status") if c in feats}
    if "score" in cols:
        cols["score"] = ["" if v is None or v != v else float(v) for v in cols["score"]]
    if radii is not None:
        radii = np.asarray(radii, dtype=float).reshape(-1)
        radii = np.where(np.isfinite(radii), radii, 3.0)
    return Path(annotations.write_points_csv(path, points, radii, **cols))


# --------------------------------------------------------------------------- detectors


@dataclass
class Candidates:
    """Every candidate of a classical detector, or a model's raw output read back from disk:
    the same ``select`` as the core's ``RawOutput`` (NMS, then γ, then the mask)."""

    points: np.ndarray
    scores: np.ndarray
    image_shape: tuple | None = None
    mask: np.ndarray | None = None
    gravity_points: np.ndarray | None = None
    detector: dict | None = None  # which model made it (a saved raw output)
    floor: float = 1e-3
    zoom: float = 1.0  # a model's output on an image resampled to its FOV scale: NMS box / zoom

    @property
    def moved_points(self) -> np.ndarray:
        return self.points

    def select(self, threshold, box, iou=0.5, mask=None):
        from napari_gravity.core.postprocess import postprocess

        return postprocess(
            self.points, self.scores, threshold, box / self.zoom, iou, mask, self.image_shape
        )


def detections(raw, threshold: float, nms_box: float, nms_iou: float):
    """γ + NMS + the raw output's tissue mask on cached candidates (no network run)."""
    return raw.select(threshold, nms_box, nms_iou, raw.mask)


@dataclass
class Detector:
    """A detector the docks can run: ``raw(image, progress)`` is the expensive part, run once
    per image; its result answers every γ / NMS change (:func:`detections`)."""

    name: str
    kind: str  # "model" or "classical": what the sidecar records, never dispatched on
    detector: object
    metadata: dict
    path: str | None = None
    defaults: dict | None = None

    def __post_init__(self):
        self.defaults = {**DEFAULT_PARAMS, **(self.defaults or {})}

    def raw(self, image: np.ndarray, progress=None):
        out = self.detector.detect(image)
        if progress is not None:
            progress(1.0)
        return Candidates(out.points, out.scores)


class ModelDetector(Detector):
    """A GravityNet ``Predictor``. The network sees only the tissue of the model's task (the
    mask's box), and the mask then filters every γ / NMS change. ``progress(fraction)`` is
    called as the forward pass advances; an exception it raises stops the run (a cancel)."""

    def raw(self, image: np.ndarray, progress=None, fov_source=None):
        """``fov_source``: the photograph's brightest channel (``fov_source_of``), where a
        fundus field of view is found when it has the image's shape."""
        from napari_gravity.data.masks import tissue_mask, upright

        task = self.metadata.get("task")
        image, note = upright(image, task)  # MONOCHROME1 data saved without its tag
        #: what was done to the image before the network saw it (the dock shows it)
        self.note = note or ""
        mask = tissue_mask(image, task, fov_source)
        raw = self.detector.raw(image, mask, progress)
        raw.mask = mask
        # the γ / NMS calibrated for the test-time augmentation this image got (γ raised by the
        # area rule on an image with more tissue than the validation images) become the
        # defaults; ``mode_changed`` tells the dock to apply them
        self.mode = getattr(raw, "tta", "off")
        self.area = self.detector.tissue_area(image.shape, mask, raw.zoom)
        params = self.detector.params_for(self.mode, self.area)  # raised on a large image
        self.tile_threshold = self.detector.params_for(self.mode)["threshold"]
        self.mode_changed = any(self.defaults.get(k) != v for k, v in params.items())
        self.defaults = {**self.defaults, **params}
        return raw


def fov_source_of(path: str | os.PathLike | None) -> np.ndarray | None:
    """A colour photograph file's brightest channel (``ImageRecord.fov_source``), read again
    for the fundus mask (the layer holds the green channel only); None for a grey image or a
    file that cannot be read now."""
    if not path:
        return None
    from napari_gravity.data.readers import read_image

    try:
        return read_image(path).fov_source
    except Exception:  # the layer is what gets detected; the mask falls back to it
        return None


def load_detector(
    path: str | os.PathLike, device: str = "auto", tta: str = "auto"
) -> ModelDetector:
    """A GravityNet ``Predictor`` for a model file (its metadata threshold as default γ;
    ``tta``: the Predictor's test-time augmentation, "auto" = 8 views on images up to
    2.5 megapixels where the model is calibrated for it)."""
    block_triton_in_gui()
    from napari_gravity.core.predictor import Predictor, interactive_floor

    pred = Predictor.from_file(path, device=device, tta=tta)
    meta = dict(getattr(pred, "metadata", {}) or {})
    cfg = pred.config
    thr = meta.get("threshold", getattr(cfg, "threshold", None))
    defaults = {"threshold": float(0.5 if thr is None else thr), "nms_box": float(cfg.nms_box)}
    lowest = min([defaults["threshold"], *(p["threshold"] for p in pred.tta_params.values())])
    pred.floor = interactive_floor(lowest)  # NMS changes stay interactive in every mode
    p = Path(path)
    label = p.stem
    if p.stem[:1] in ("v", "V") and p.stem[1:].isdigit() and p.parent.name not in ("", "."):
        label = f"{p.parent.name}:v{int(p.stem[1:])}"  # the registry's NAME:vN
    return ModelDetector(
        label, "model", pred, meta, str(path), {**defaults, "nms_iou": float(cfg.nms_iou)}
    )


CLASSICAL = ("Hessian-DoG", "Top-hat")


def classical_detector(name: str) -> Detector:
    from napari_gravity import detectors

    cls = {"Hessian-DoG": detectors.HessianDoG, "Top-hat": detectors.TopHat}[name]
    return Detector(name, "classical", cls(), {"kind": name})


def image_task(image: np.ndarray, meta: dict | None = None) -> tuple[str | None, str]:
    """("mc" | "ma" | None, why) from ``core.task.guess_task``; never raises."""
    from napari_gravity.core.task import guess_task

    try:
        out = guess_task(np.asarray(image), meta or {})
    except Exception as exc:  # a guess must never break the dock
        return None, f"cannot tell ({type(exc).__name__})"
    task, why = out if isinstance(out, tuple) else (out, "")
    if not why:
        fmt = str((meta or {}).get("format") or "").upper()
        why = f"{fmt} file" if fmt else "from the image"
    return (task if task in ("mc", "ma") else None), why


# --------------------------------------------------------------------------- evaluation


def evaluate(items: dict[str, tuple]) -> tuple[dict, object]:
    """FROC report + result for ``{image_id: (points, scores, gt_points, gt_radii)}``."""
    from napari_gravity.evaluation.froc import froc_curve
    from napari_gravity.evaluation.report import build_report

    res = froc_curve(
        {k: (v[0], v[1]) for k, v in items.items()}, {k: (v[2], v[3]) for k, v in items.items()}
    )
    return build_report(res, name="detections"), res


def match(points, scores, gt_points, gt_radii) -> tuple[np.ndarray, np.ndarray]:
    """(labels per detection: 1 TP / 0 FP / 2 duplicate, hit flag per lesion)."""
    from napari_gravity.evaluation import match_image

    m = match_image(points, scores, gt_points, gt_radii)
    hit = np.zeros(len(np.asarray(gt_points).reshape(-1, 2)), dtype=bool)
    hit[m.lesion[m.lesion >= 0]] = True
    return m.labels, hit
