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
    """A whole synthetic fundus photograph with microaneurysms: ``(Sample, rgb_uint8)``."""
    from napari_gravity.data.synthetic import synth_fundus as _synth

    return _synth(shape=shape, seed=seed, view="full", has_lesions=True, rgb=True)


def semi_real_retina(seed: int = 0, shape=(512, 512)):
    """Microaneurysms inserted into a window of scikit-image's real retina photograph:
    ``(Sample, rgb_uint8)``."""
    from napari_gravity.data.synthetic import semi_real_retina as _semi

    return _semi(seed=seed, shape=shape, rgb=True)


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


def _dlopen_torch_libraries() -> None:
    """Load torch's big shared libraries with the GIL released.

    ``import torch`` loads libtorch_cpu & co. (hundreds of MB, long static initialisers) while
    holding the GIL, which froze the GUI thread for 0.8 s even when the import ran in a worker.
    Calling libc's ``dlopen`` through ctypes releases the GIL; the import then finds them loaded.
    """
    import ctypes
    import glob
    import importlib.util

    if sys.platform != "linux" or "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return
    root = Path(spec.origin).parent
    names = ("libtorch_global_deps", "libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda")
    libs = [root / "lib" / f"{n}.so" for n in names]
    libs += [root / "lib" / "libtorch.so", root / "lib" / "libtorch_python.so"]
    libs += [Path(p) for p in glob.glob(str(root / "_C.*.so"))]
    vision = importlib.util.find_spec("torchvision")
    if vision is not None and vision.origin:
        libs += [Path(p) for p in glob.glob(str(Path(vision.origin).parent / "*.so"))]
    try:
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    except (OSError, AttributeError):
        return
    for lib in libs:
        if lib.is_file():
            libc.dlopen(str(lib).encode(), 0x002 | 0x100)  # RTLD_NOW | RTLD_GLOBAL


_TORCH_THREAD = None
_TORCH_ERROR: list[BaseException] = []


def start_torch_import() -> None:
    """Import torch, torchvision and the predictor in a background thread (once).

    Call it from the GUI thread (it first keeps triton out, see ``_block_triton_in_gui``);
    ``wait_for_torch()`` in a worker then blocks until it is done. The GUI thread itself must
    never import torch while this runs (it would wait on the import lock).
    """
    global _TORCH_THREAD
    if _TORCH_THREAD is not None:
        return
    import threading

    _block_triton_in_gui()

    def work():
        try:
            from .runner import lower_priority

            lower_priority()
            _dlopen_torch_libraries()
            import torchvision  # noqa: F401  (imports torchvision.ops -> torch._dynamo)

            import napari_gravity.core.model_io
            import napari_gravity.core.predictor  # noqa: F401
        except BaseException as exc:  # reported by wait_for_torch
            _TORCH_ERROR.append(exc)

    _TORCH_THREAD = threading.Thread(target=work, name="gravity-torch-import", daemon=True)
    _TORCH_THREAD.start()


def torch_ready() -> bool:
    return _TORCH_THREAD is not None and not _TORCH_THREAD.is_alive() and not _TORCH_ERROR


def wait_for_torch() -> None:
    """Block (in a worker thread) until the background import is done."""
    if _TORCH_THREAD is None:
        start_torch_import()
    _TORCH_THREAD.join()
    if _TORCH_ERROR:
        raise RuntimeError(f"cannot import torch: {_TORCH_ERROR[0]}") from _TORCH_ERROR[0]


def preload_torch() -> None:
    """Import torch / torchvision now, in the calling thread (scripts and tests)."""
    start_torch_import()
    wait_for_torch()


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
    """``ROOT/NAME/v003.safetensors`` -> ``NAME:v3`` (the registry's label); else the stem."""
    p = Path(path)
    ver = p.stem[1:]
    if p.stem[:1] in ("v", "V") and ver.isdigit():
        return f"{p.parent.name}:v{int(ver)}"
    return p.stem


def classical_detector(name: str) -> DetectorHandle:
    from napari_gravity import detectors

    cls = {"Hessian-DoG": detectors.HessianDoG, "Top-hat": detectors.TopHat}[name]
    return DetectorHandle(name=name, kind="classical", detector=cls(), metadata={"kind": name})


def read_model_metadata(path: str | os.PathLike) -> dict:
    """A model file's metadata, read from the safetensors header without importing torch (the
    Detect dock shows it in the GUI thread). ``ValueError`` naming the file when unreadable."""
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if not 0 < n < 100_000_000:
                raise ValueError("bad header size")
            header = json.loads(fh.read(n))
        text = (header.get("__metadata__") or {})["napari_gravity"]
        meta = json.loads(text)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise ValueError(f"{path}: not a napari-gravity model file ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: not a napari-gravity model file (no config)")
    return meta


def layer_image_meta(layer) -> dict:
    """What the reader knew about an image layer's file (format, DICOM tags, path)."""
    meta = dict(getattr(layer, "metadata", None) or {})
    info = meta.get("gravity") or {}
    out = dict(info.get("image_meta") or {})
    if info.get("image_path") or meta.get("path"):
        out.setdefault("path", info.get("image_path") or meta.get("path"))
    return out


def image_task(image: np.ndarray, meta: dict | None = None) -> tuple[str | None, str]:
    """("mc" | "ma" | None, why) from ``core.task.guess_task`` (None when it is missing)."""
    try:
        from napari_gravity.core.task import guess_task
    except ImportError:
        return None, "no task guess installed"
    try:
        out = guess_task(np.asarray(image), meta or {})
    except Exception as exc:  # a guess must never break the dock
        return None, f"cannot tell ({type(exc).__name__})"
    task, why = out if isinstance(out, tuple) else (out, "")
    if not why:
        fmt = str((meta or {}).get("format") or "").upper()
        why = f"{fmt} file" if fmt else "from the image"
    return (task if task in ("mc", "ma") else None), why


def _conv_costs(model) -> dict:
    """Each convolution's share of a forward pass (multiply-adds), from a 64×64 dry run; the
    shares hold for any image size (every layer's output scales with the input area)."""
    costs = getattr(model, "_gravity_conv_costs", None)
    if costs is not None:
        return costs
    import torch

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    raw: dict = {}

    def hook(m, _inp, out):
        raw[m] = float(out.numel()) * float(m.weight[0].numel())

    hooks = [c.register_forward_hook(hook) for c in convs]
    try:
        p = next(model.parameters())
        with torch.inference_mode():
            model(torch.zeros(1, convs[0].in_channels, 64, 64, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    total = sum(raw.values()) or 1.0
    costs = {m: c / total for m, c in raw.items()}
    model._gravity_conv_costs = costs
    return costs


def raw_output(handle: DetectorHandle, image: np.ndarray, progress: dict | None = None):
    """The expensive part, run once per image: the net's decoded raw output (with the tissue mask
    of the model's task attached), or the classical detector's candidates (a ``Detections``).
    ``progress["done"]`` (0-1) follows the forward pass: the share of its convolutions done."""
    if handle.kind != "model":
        return handle.detector.detect(image)
    from napari_gravity.data.masks import tissue_mask

    hooks = []
    if progress is not None:
        progress["done"] = 0.0
        model = handle.detector.model
        try:
            costs = _conv_costs(model)
        except Exception:  # progress is a nicety: never fail a detection for it
            costs = {}

        def hook(m, _inp, _out):
            progress["done"] = min(1.0, progress["done"] + costs.get(m, 0.0))

        hooks = [m.register_forward_hook(hook) for m in costs]
    try:
        raw = handle.detector.raw(image)
    finally:
        for h in hooks:
            h.remove()
    # The breast / fundus mask of the model's task then filters every γ / NMS change.
    raw.mask = tissue_mask(image, handle.metadata.get("task"))
    return raw


def apply_params(
    handle: DetectorHandle | None, raw, threshold: float, nms_box: float, nms_iou: float
):
    """Threshold γ + NMS on a cached raw output (no network run) -> ``Detections``."""
    if handle is not None and handle.kind == "model" and not isinstance(raw, SavedRaw):
        return handle.detector.from_raw(raw, threshold=threshold, nms_box=nms_box, nms_iou=nms_iou)
    from napari_gravity.core.postprocess import postprocess

    mask = getattr(raw, "mask", None)
    shape = getattr(raw, "image_shape", None)
    return postprocess(raw.points, raw.scores, threshold, nms_box, nms_iou, mask, shape)


@dataclass
class SavedRaw:
    """A raw output read back from ``IMG.raw.npz`` (no torch needed): the candidates scoring
    at least ``floor``, with the tissue mask, for the model in ``detector``."""

    points: np.ndarray
    scores: np.ndarray
    gravity_points: np.ndarray
    image_shape: tuple[int, int]
    mask: np.ndarray | None
    detector: dict
    floor: float = 1e-3

    @property
    def moved_points(self) -> np.ndarray:
        return self.points


def _model_stamp(path) -> list[int]:
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def save_raw(path: str | os.PathLike, raw, detector: dict) -> Path | None:
    """Cache a model's raw output beside the review (atomic), so a reopened image's γ / NMS are
    live without a new Detect. Only the candidates scoring ≥ the raw output's floor are kept."""
    import json

    from napari_gravity.fileio import atomic_write

    if not hasattr(raw, "gravity_points") or not detector.get("path"):
        return None
    floor = float(getattr(raw, "floor", 1e-3))
    keep = np.asarray(raw.scores) >= floor
    mask = getattr(raw, "mask", None)
    arrays = {
        "points": np.asarray(raw.points, np.float32)[keep],
        "scores": np.asarray(raw.scores, np.float32)[keep],
        "gravity_points": np.asarray(raw.gravity_points, np.float32)[keep],
        "image_shape": np.asarray(raw.image_shape, np.int64),
        "floor": np.float64(floor),
        "detector": np.array(json.dumps({**detector, "stamp": _model_stamp(detector["path"])})),
    }
    if mask is not None:
        arrays["mask"] = np.packbits(np.asarray(mask, bool))

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)
    return Path(path)


def load_raw(path: str | os.PathLike, image_shape=None) -> SavedRaw | None:
    """A cached raw output, or None when missing, unreadable or stale (the model file changed,
    or the image has another shape)."""
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            det = json.loads(str(z["detector"]))
            shape = tuple(int(v) for v in z["image_shape"])
            mask = None
            if "mask" in z.files:
                n = shape[0] * shape[1]
                mask = np.unpackbits(z["mask"], count=n).astype(bool).reshape(shape)
            raw = SavedRaw(
                z["points"], z["scores"], z["gravity_points"], shape, mask, det, float(z["floor"])
            )
    except (OSError, ValueError, KeyError) as exc:
        del exc
        return None
    if image_shape is not None and tuple(image_shape[:2]) != shape:
        return None
    try:
        if _model_stamp(det["path"]) != list(det.get("stamp", [])):
            return None
    except (OSError, KeyError, TypeError):
        return None
    return raw


def raw_points(raw) -> tuple[np.ndarray, np.ndarray]:
    """Decoded gravity points (moved towards lesions) and their scores, for the overlay."""
    pts = getattr(raw, "moved_points", raw.points)
    return np.asarray(pts, dtype=float).reshape(-1, 2), np.asarray(raw.scores, dtype=float)


def device_name(handle: DetectorHandle | None = None) -> str:
    """ "CPU" or "GPU (name)"; "not known yet" while torch is not imported (never imports it
    from the GUI thread)."""
    dev = getattr(getattr(handle, "detector", None), "device", None)
    if "torch" not in sys.modules or (_TORCH_THREAD is not None and _TORCH_THREAD.is_alive()):
        return "not known yet (checked when a model loads)"
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


# --------------------------------------------------------------------------- model comparison


def compare_models(
    models: dict[str, str | os.PathLike], images: list[tuple], max_fppi: float = 10.0
) -> dict[str, dict]:
    """Each model on the same held-out images: AUFROC and, at the model's own γ, sensitivity
    and false positives per image. ``images``: (path, gt points (y, x), gt radii)."""
    out: dict[str, dict] = {}
    for label, path in models.items():
        handle = load_detector(path)
        thr = handle.defaults["threshold"]
        items, tp, fp, n_les = {}, 0, 0, 0
        for k, (img_path, gpts, gradii) in enumerate(images):
            image = np.asarray(read_image(img_path).image, dtype=np.float32)
            raw = raw_output(handle, image)
            d = apply_params(
                handle, raw, 0.0, handle.defaults["nms_box"], handle.defaults["nms_iou"]
            )
            gpts = np.asarray(gpts, float).reshape(-1, 2)
            items[f"{k}:{Path(img_path).name}"] = (d.points, d.scores, gpts, gradii, image.shape)
            keep = np.asarray(d.scores) >= thr
            labels, hit = match(
                np.asarray(d.points)[keep], np.asarray(d.scores)[keep], gpts, gradii
            )
            tp += int(hit.sum())
            fp += int(((labels == 0) | (labels == 2)).sum())
            n_les += len(gpts)
        rep, _ = evaluate(items)
        out[label] = {
            "aufroc": float(rep["aufroc"]),
            "max_fppi": float(rep["max_fppi"]),
            "threshold": float(thr),
            "sensitivity": tp / n_les if n_les else float("nan"),
            "fp_per_image": fp / max(len(images), 1),
            "n_images": len(images),
            "n_lesions": n_les,
        }
    return out
