"""The plugin's only doorway to the core, data, detectors and evaluation packages.

Every call the widgets make into the Qt-free packages goes through here, so the plugin
never reimplements detection, I/O, FROC or generators, and an API change is adapted
in one place. Imports are lazy so the reader and the manifest stay cheap.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- images / points


def read_image(path: str | os.PathLike):
    """``ImageRecord(image float32 2-D, spacing, meta)`` from the data layer."""
    from napari_gravity.data.readers import read_image as _read

    return _read(path)


@dataclass
class PointTable:
    """Points read from a file: (y, x), radii and a features frame."""

    points: np.ndarray
    radii: np.ndarray
    features: pd.DataFrame


def _table_from(obj) -> PointTable:
    """Adapt the data layer's ``PointTable`` (points, radii, extra columns as strings)."""
    pts = np.asarray(obj.points, dtype=float).reshape(-1, 2)
    radii = np.asarray(obj.radii, dtype=float).reshape(-1)
    feats = pd.DataFrame({k: list(v) for k, v in (getattr(obj, "extra", None) or {}).items()})
    if len(feats) != len(pts):
        feats = pd.DataFrame(index=range(len(pts)))
    if "score" in feats:
        feats["score"] = pd.to_numeric(feats["score"], errors="coerce")
    return PointTable(pts, radii, feats.reset_index(drop=True))


def read_points_csv(path: str | os.PathLike) -> PointTable:
    from napari_gravity.data import annotations

    return _table_from(annotations.read_points_csv(path))


def read_inbreast_xml(path: str | os.PathLike) -> PointTable:
    """The calcifications of an INbreast XML (centre + radius per ROI)."""
    from napari_gravity.data import annotations

    pts, radii, names = annotations.inbreast_calcifications(annotations.read_inbreast_xml(path))
    pts = np.asarray(pts, dtype=float).reshape(-1, 2)
    feats = pd.DataFrame({"roi": list(names)}) if len(names) == len(pts) else None
    return PointTable(pts, np.asarray(radii, dtype=float).reshape(-1), feats)


def write_points_csv(
    path: str | os.PathLike, points: np.ndarray, radii=None, features: pd.DataFrame | None = None
) -> Path:
    """Atomic write of our CSV (``y,x,radius[,score,source,status]``) by the data layer."""
    from napari_gravity.data import annotations

    cols = {}
    if features is not None:
        for col in ("score", "source", "status"):
            if col in features:
                vals = features[col].tolist()
                if col == "score":
                    vals = ["" if v is None or v != v else float(v) for v in vals]
                cols[col] = vals
    if radii is not None:
        radii = np.asarray(radii, dtype=float).reshape(-1)
        radii = np.where(np.isfinite(radii), radii, 3.0)
    return Path(annotations.write_points_csv(path, points, radii, **cols))


def is_points_csv(path: str | os.PathLike) -> bool:
    """True for our points CSV (header with ``y`` and ``x`` columns)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline()
    except OSError:
        return False
    cols = [c.strip().strip('"').lower() for c in header.split(",")]
    return "y" in cols and "x" in cols


def is_inbreast_xml(path: str | os.PathLike) -> bool:
    """True for an Apple plist holding an ``Images`` list (INbreast annotations)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b"plist" in head.lower() and b"<key>Images</key>" in head


# --------------------------------------------------------------------------- synthetic samples


def synth_mammogram(seed: int = 0, shape=(512, 512)):
    from napari_gravity.data.synthetic import synth_mammogram as _synth

    return _synth(shape=shape, seed=seed, has_lesions=True)


def synth_fundus(seed: int = 0, shape=(608, 704)):
    """A whole synthetic fundus photograph (green channel) with microaneurysms."""
    from napari_gravity.data.synthetic import synth_fundus as _synth

    return _synth(shape=shape, seed=seed, view="full", has_lesions=True)


def semi_real_retina(seed: int = 0, shape=(512, 512)):
    """Microaneurysms inserted into a window of scikit-image's real retina photograph."""
    from napari_gravity.data.synthetic import semi_real_retina as _semi

    return _semi(seed=seed, shape=shape)


# --------------------------------------------------------------------------- detectors / models


@dataclass
class DetectorHandle:
    """A loaded detector: a GravityNet ``Predictor`` (cached raw outputs) or a classical one."""

    name: str
    kind: str  # "model" or "classical"
    detector: object
    metadata: dict
    config: object | None = None
    path: str | None = None

    @property
    def defaults(self) -> dict:
        cfg = self.config
        if cfg is None:
            return {"threshold": 0.5, "nms_box": 7.0, "nms_iou": 0.5}
        thr = self.metadata.get("threshold", getattr(cfg, "threshold", 0.5))
        return {
            "threshold": float(thr if thr is not None else 0.5),
            "nms_box": float(cfg.nms_box),
            "nms_iou": float(cfg.nms_iou),
        }


CLASSICAL = ("Hessian-DoG", "Top-hat")


def _block_triton_in_gui() -> None:
    """Keep torch from importing triton inside a running Qt GUI.

    ``import torchvision`` pulls in ``torch._dynamo``, which imports triton when it is
    installed; triton's bundled LLVM segfaults when it is loaded after Mesa's llvmpipe
    (software OpenGL, e.g. under Xvfb) is already in the process. Inference never needs
    triton (it only serves ``torch.compile``), so inside a GUI that has not imported it
    yet we make ``import triton`` fail cleanly. ``GRAVITY_ALLOW_TRITON=1`` turns this off.
    """
    if "triton" in sys.modules or os.environ.get("GRAVITY_ALLOW_TRITON") == "1":
        return
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # no Qt: nothing to protect
        return
    if QApplication.instance() is not None:
        sys.modules["triton"] = None  # torch treats this as "triton not installed"


def preload_torch() -> None:
    """Import torch / torchvision in the calling (main) thread, safely next to Qt.

    The Detect dock calls this before starting a worker, so torch is never first
    imported off the main thread.
    """
    _block_triton_in_gui()
    import torchvision  # noqa: F401  (imports torchvision.ops -> torch._dynamo)

    import napari_gravity.core.model_io
    import napari_gravity.core.predictor  # noqa: F401


def load_detector(path: str | os.PathLike, device: str = "auto") -> DetectorHandle:
    """A GravityNet ``Predictor`` for a model file (its metadata threshold as default γ)."""
    _block_triton_in_gui()
    from napari_gravity.core.predictor import Predictor

    pred = Predictor.from_file(path, device=device)
    return DetectorHandle(
        name=Path(path).stem if Path(path).parent.name in ("", ".") else _model_label(path),
        kind="model",
        detector=pred,
        metadata=dict(getattr(pred, "metadata", {}) or {}),
        config=pred.config,
        path=str(path),
    )


def _model_label(path: str | os.PathLike) -> str:
    p = Path(path)
    return f"{p.parent.name}:{p.stem}" if p.stem.startswith("v") else p.stem


def classical_detector(name: str) -> DetectorHandle:
    from napari_gravity import detectors

    cls = {"Hessian-DoG": detectors.HessianDoG, "Top-hat": detectors.TopHat}[name]
    return DetectorHandle(name=name, kind="classical", detector=cls(), metadata={"kind": name})


def read_model_metadata(path: str | os.PathLike) -> dict:
    from napari_gravity.core.model_io import read_model_metadata as _read

    return dict(_read(path))


def raw_output(handle: DetectorHandle, image: np.ndarray):
    """The expensive part, run once per image: the net's decoded raw output (with the tissue mask
    of the model's task attached), or the classical detector's candidates (a ``Detections``)."""
    if handle.kind != "model":
        return handle.detector.detect(image)
    from napari_gravity.data.masks import tissue_mask

    raw = handle.detector.raw(image)
    # The breast / fundus mask of the model's task then filters every γ / NMS change.
    raw.mask = tissue_mask(image, handle.metadata.get("task"))
    return raw


def apply_params(handle: DetectorHandle, raw, threshold: float, nms_box: float, nms_iou: float):
    """Threshold γ + NMS on a cached raw output (no network run) -> ``Detections``."""
    if handle.kind == "model":
        return handle.detector.from_raw(raw, threshold=threshold, nms_box=nms_box, nms_iou=nms_iou)
    from napari_gravity.core.postprocess import postprocess

    return postprocess(raw.points, raw.scores, threshold, nms_box, nms_iou)


def raw_points(raw) -> tuple[np.ndarray, np.ndarray]:
    """Decoded gravity points (moved towards lesions) and their scores, for the overlay."""
    pts = getattr(raw, "moved_points", raw.points)
    return np.asarray(pts, dtype=float).reshape(-1, 2), np.asarray(raw.scores, dtype=float)


def device_name(handle: DetectorHandle | None = None) -> str:
    dev = getattr(getattr(handle, "detector", None), "device", None)
    _block_triton_in_gui()
    try:
        import torch

        if dev is None:
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        dev = str(dev)
        if dev.startswith("cuda") and torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)})"
    except Exception:  # pragma: no cover - torch missing or broken
        return "CPU"
    return "CPU"


# --------------------------------------------------------------------------- registry


def registry_dir() -> Path:
    from napari_gravity.core import registry

    return Path(registry.models_dir())


def list_models() -> list[tuple[str, Path]]:
    """(label, path) of the bundled default model(s) and every registered version."""
    from napari_gravity.core import registry

    return [(e.label, Path(e.path)) for e in registry.list_models(with_metadata=False)]


def register_model(path: str | os.PathLike, name: str) -> tuple[str, Path]:
    """Copy ``path`` into the registry as the next version of ``name`` (never overwriting)."""
    from napari_gravity.core import registry

    entry = registry.register_model(path, name)
    return entry.label, Path(entry.path)


def resolve_model(spec: str) -> Path:
    """A model file from a registry label (``NAME:vN``), ``default`` or a path."""
    from napari_gravity.core import registry

    return Path(registry.resolve_model(spec))


# --------------------------------------------------------------------------- evaluation


def evaluate(images: dict[str, tuple]) -> tuple[dict, object]:
    """FROC report + result for ``{image_id: (points, scores, gt_points, gt_radii, shape)}``."""
    from napari_gravity.evaluation import evaluate_detections
    from napari_gravity.types import Detections, Sample

    dets, samples = {}, {}
    for iid, (pts, scores, gpts, gradii, shape) in images.items():
        dets[iid] = Detections(pts, scores)
        samples[iid] = Sample(
            image=np.zeros(shape[:2], dtype=np.float32), points=gpts, radii=gradii, image_id=iid
        )
    return evaluate_detections(dets, samples, return_result=True, name="detections")


def match(points, scores, gt_points, gt_radii) -> tuple[np.ndarray, np.ndarray]:
    """(labels per detection: 1 TP / 0 FP / 2 duplicate, hit flag per lesion)."""
    from napari_gravity.evaluation import match_image

    m = match_image(points, scores, gt_points, gt_radii)
    hit = np.zeros(len(np.asarray(gt_points).reshape(-1, 2)), dtype=bool)
    hit[m.lesion[m.lesion >= 0]] = True
    return m.labels, hit
