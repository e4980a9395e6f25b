"""Predictor: run GravityNet once per image, then re-apply γ / NMS from cached outputs.

``raw(image, mask)`` normalises the image as configured, runs the network once and caches the
decoded candidates (all N gravity points: moved positions + scores) by a hash of the image. With
a tissue mask, the network runs only on the mask's bounding box grown by the receptive-field
radius (the air around a breast is never computed; points outside score 0), and a ``progress``
callback follows the forward pass convolution by convolution (raise in it to cancel). ``detect``
and ``from_raw`` post-process from the cache: the NMS over the candidates above a small floor
score is computed once per (L, IoU) and a threshold change is a mask on that kept set (exact for
every γ ≥ floor, see :mod:`napari_gravity.core.postprocess`).

``detect`` / ``detect_batch`` (``postprocess="device"``, the default) take a lean path instead:
decode, threshold, NMS and the mask filter run where the network's outputs are (the GPU, or the
CPU) and only the survivors are copied to host arrays; nothing is cached (the GUI's live
re-thresholding uses ``raw``), and no content hash is computed unless ``raw`` filled the cache.
The detections equal ``from_raw(raw(...))`` (tested); on an idle 2-core CPU the post-processing
of a full mammogram drops from ~5.8 % to ~1.4 % of the detection time (no 532k-point host
copies; benchmarks/cpu_detect.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..types import Detections
from .config import (
    GravityConfig,
    area_rules,
    area_threshold,
    postprocess_defaults,
    tta_calibrations,
)
from .fov import fov_zoom, resample
from .model import GravityNet
from .normalize import as_float_image, local_contrast, normalize_image
from .postprocess import decode, inside_image, inside_mask, nms_keep, nms_keep_torch
from .tta import MODES as TTA_MODES
from .tta import (
    chest_wall_view,
    fuse_views,
    pad_symmetric,
    symmetric_size,
    unview_points,
    view,
    views,
)

DEFAULT_FLOOR = 1e-3
#: The highest floor an interactive session uses (see :func:`interactive_floor`).
INTERACTIVE_FLOOR_MAX = 0.1
#: A crop is used only when it saves at least this share of the image area.
MIN_CROP_SAVING = 0.1
#: ``tta="auto"``: the 8-view test-time augmentation on images whose network input (the mask's
#: crop, else the whole image) has at most this many pixels, one pass above (a 384² tile takes
#: ~0.3 s with 8 views on 2 CPU cores; a whole mammogram would take 8× its 3-4 s).
TTA_AUTO_MAX_PIXELS = 2_500_000

Progress = Callable[[float], None]


_HASH_POOL: ThreadPoolExecutor | None = None


def image_key(image: np.ndarray) -> str:
    """Content key of an image (shape, dtype and every byte): SHA-1 (hardware-accelerated on
    current CPUs) of four slices hashed in parallel for images over 8 MB, then of their digests."""
    global _HASH_POOL
    a = np.ascontiguousarray(image)
    data = memoryview(a).cast("B")
    n = len(data)
    parts = 4 if n > (8 << 20) else 1
    slices = [data[i * n // parts : (i + 1) * n // parts] for i in range(parts)]
    if parts > 1:
        if _HASH_POOL is None:
            _HASH_POOL = ThreadPoolExecutor(parts, thread_name_prefix="image-key")
        digests = list(_HASH_POOL.map(lambda b: hashlib.sha1(b).digest(), slices))
    else:
        digests = [hashlib.sha1(slices[0]).digest()]
    return hashlib.sha1(f"{a.shape}{a.dtype}".encode() + b"".join(digests)).hexdigest()


@dataclass
class RawOutput:
    """Network outputs for one image, decoded.

    ``points`` (N, 2) float32 (y, x): every gravity point moved by its offset (= ``moved_points``);
    ``scores`` (N,) float32 sigmoid scores; ``gravity_points`` (N, 2) the initial positions
    (for a GUI overlay). ``floor``: NMS results are cached for candidates scoring ≥ floor.
    """

    points: np.ndarray
    scores: np.ndarray
    gravity_points: np.ndarray
    image_shape: tuple[int, int]
    d_h: float
    floor: float = DEFAULT_FLOOR
    key: str = ""
    mask: np.ndarray | None = None  # tissue / FOV mask used by from_raw when none is passed
    tta: str = "off"  # the test-time augmentation that made it (its γ / NMS are the defaults)
    #: network pixels per image pixel (an image resampled to the model's FOV scale, see
    #: :mod:`.fov`): points are in image pixels, an NMS box in the model's pixels
    zoom: float = 1.0
    _nms_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def moved_points(self) -> np.ndarray:
        return self.points

    def _entry(self, box: float, iou: float, floor: float) -> dict:
        ck = (float(box), float(iou), float(floor))
        hit = self._nms_cache.get(ck)
        if hit is None:
            sel = (self.scores >= floor) & inside_image(self.points, self.image_shape)
            idx = np.flatnonzero(sel)
            keep = idx[nms_keep(self.points[idx], self.scores[idx], box / self.zoom, iou)]
            hit = {"keep": keep, "scores": self.scores[keep], "sorted_min": np.inf}
            if len(self._nms_cache) >= 8:
                self._nms_cache.pop(next(iter(self._nms_cache)))
            self._nms_cache[ck] = hit
        return hit

    def kept(
        self, box: float, iou: float, floor: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the NMS survivors among the candidates ≥ floor inside the image, with their
        scores (input order; cached per (box, iou, floor))."""
        e = self._entry(box, iou, self.floor if floor is None else float(floor))
        return e["keep"], e["scores"]

    def _sorted_above(self, e: dict, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Survivors with score ≥ threshold, best first. The sorted list covers the lowest
        threshold seen so far; a lower threshold sorts only the new band [threshold, previous)
        and appends it, so moving a slider costs a binary search or a small sort."""
        lo = e["sorted_min"]
        if threshold < lo:
            m = e["scores"] >= threshold
            if np.isfinite(lo):
                m &= e["scores"] < lo
            k, sc = e["keep"][m], e["scores"][m]
            order = np.argsort(-sc, kind="stable")
            if np.isfinite(lo):
                e["sorted_keep"] = np.concatenate([e["sorted_keep"], k[order]])
                e["sorted_scores"] = np.concatenate([e["sorted_scores"], sc[order]])
            else:
                e["sorted_keep"], e["sorted_scores"] = k[order], sc[order]
            e["sorted_min"] = threshold
        sc = e["sorted_scores"]
        n = int(np.searchsorted(-sc, -threshold, side="right"))
        return e["sorted_keep"][:n], sc[:n]

    def select(
        self,
        threshold: float,
        box: float,
        iou: float = 0.5,
        mask: np.ndarray | None = None,
    ) -> Detections:
        """Detections with score ≥ threshold after NMS (L = box) and the tissue-mask filter,
        sorted by decreasing score. Equal to NMS over all candidates, then the threshold."""
        threshold = float(threshold)
        floor = self.floor if threshold >= self.floor else threshold
        keep, sc = self._sorted_above(self._entry(box, iou, floor), threshold)
        pts = self.points[keep]
        if mask is not None and len(keep):
            ok = inside_mask(pts, mask)
            pts, sc = pts[ok], sc[ok]
        return Detections(points=pts, scores=sc, threshold=threshold, tta=self.tta, zoom=self.zoom)

    def unzoomed(self, zy: float, zx: float, shape: tuple[int, int], key: str) -> RawOutput:
        """This output of an image resampled by (zy, zx), in the original image's pixels."""
        z = np.array([zy, zx], dtype=np.float32)

        def back(p: np.ndarray) -> np.ndarray:
            return (p + 0.5) / z - 0.5

        return self._moved(back, shape, key, float(np.sqrt(zy * zx)))

    def unviewed(self, k: int, shape: tuple[int, int], key: str) -> RawOutput:
        """This output of view ``k`` (:func:`.tta.view`) of an image of ``shape``, in that
        image's pixels."""
        return self._moved(lambda p: unview_points(p, k, shape), shape, key, self.zoom)

    def _moved(self, back, shape: tuple[int, int], key: str, zoom: float) -> RawOutput:
        """The same candidates and scores with points and gravity points mapped by ``back``
        into an image of ``shape`` (a fresh NMS cache: the old one's box was in other pixels)."""
        return RawOutput(
            points=back(self.points).astype(np.float32),
            scores=self.scores,
            gravity_points=back(self.gravity_points).astype(np.float32),
            image_shape=(int(shape[0]), int(shape[1])),
            d_h=self.d_h,
            floor=self.floor,
            key=key,
            tta=self.tta,
            zoom=zoom,
        )


def interactive_floor(threshold: float) -> float:
    """The NMS floor for a GUI: a quarter of the model's operating γ, at most
    ``INTERACTIVE_FLOOR_MAX``. Every γ ≥ floor is exact from the cached NMS; a γ below it is
    still exact (``RawOutput.select`` recomputes the NMS for it), only slower. On a full
    mammogram ``default_mc`` scores all 360k points of the breast box ≥ 0.05; above 0.1 there
    are 87k, whose NMS takes ~18 ms instead of ~120 ms (benchmarks/cpu_detect.py)."""
    return float(max(DEFAULT_FLOOR, min(INTERACTIVE_FLOOR_MAX, 0.25 * float(threshold))))


def crop_box(
    mask: np.ndarray | None, shape: tuple[int, int], stride: int, margin: int
) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the region the network must see for the points inside ``mask``:
    the mask's bounding box grown by ``margin`` px, its origin on the stride grid (so the crop's
    gravity points are the image's). ``None``: the whole image (no mask, or the crop would save
    less than ``MIN_CROP_SAVING`` of it); ``(0, 0, 0, 0)``: an empty mask (nothing to compute)."""
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"mask shape {m.shape} does not match image shape {tuple(shape)}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0)
    h, w = shape
    y0 = max(0, (int(rows[0]) - margin) // stride * stride)
    x0 = max(0, (int(cols[0]) - margin) // stride * stride)
    y1 = min(h, int(rows[-1]) + 1 + margin)
    x1 = min(w, int(cols[-1]) + 1 + margin)
    if (y1 - y0) * (x1 - x0) > (1 - MIN_CROP_SAVING) * h * w:
        return None
    return (y0, y1, x0, x1)


def conv_costs(model: torch.nn.Module) -> dict[torch.nn.Module, float]:
    """Each convolution's share of a forward pass (multiply-adds), from a 64×64 dry run; the
    shares hold for any image size (every layer's output scales with the input area)."""
    costs = getattr(model, "_gravity_conv_costs", None)
    if costs is not None:
        return costs
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return {}
    raw: dict[torch.nn.Module, float] = {}

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


@contextlib.contextmanager
def _forward_progress(model: torch.nn.Module, progress: Progress | None, lo: float, hi: float):
    """Report ``lo``→``hi`` to ``progress`` as the convolutions of one forward pass finish."""
    if progress is None:
        yield
        return
    costs = conv_costs(model)
    done = [0.0]

    def hook(m, _inp, _out):
        done[0] += costs.get(m, 0.0)
        progress(lo + (hi - lo) * min(1.0, done[0]))

    hooks = [m.register_forward_hook(hook) for m in costs]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _pixel_torch(p: torch.Tensor) -> torch.Tensor:
    """The pixel of float points, ``floor(p + 0.5)`` computed exactly (as ``geometry._pixel``)."""
    f = torch.floor(p)
    return (f + ((p - f) >= 0.5).to(f.dtype)).long()


def select_on_device(
    points: torch.Tensor,
    scores: torch.Tensor,
    shape: tuple[int, int],
    threshold: float,
    box: float,
    iou: float,
    mask: torch.Tensor | None = None,
) -> Detections:
    """Detections of one image's decoded candidates, computed where the tensors live: the NMS
    over the candidates ≥ ``threshold`` inside the image, then the mask filter (as
    ``RawOutput.select``: a point outside the mask still suppresses its neighbours), sorted by
    decreasing score; only the survivors reach the host. The candidates are one network
    pass's (``tta`` "off")."""
    h, w = int(shape[0]), int(shape[1])
    y, x = points[:, 0], points[:, 1]
    valid = (scores >= threshold) & (y >= -0.5) & (y < h - 0.5) & (x >= -0.5) & (x < w - 0.5)
    keep = nms_keep_torch(points, scores, box, iou, valid=valid, extent=(h, w))
    idx = torch.nonzero(keep).flatten()
    if mask is not None and idx.numel():
        rc = _pixel_torch(points[idx])
        idx = idx[mask[rc[:, 0], rc[:, 1]]]
    idx = idx[torch.argsort(-scores[idx], stable=True)]
    return Detections(
        points=points[idx].cpu().numpy(),
        scores=scores[idx].cpu().numpy(),
        threshold=float(threshold),
        tta="off",
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Runs a GravityNet on 2-D images. Satisfies the ``Detector`` protocol (``name``,
    ``detect(image, mask=None)``).

    ``amp``: bf16/fp16 autocast on CUDA. ``cpu_bf16``: bf16 autocast on the CPU (opt-in: ~1.7x
    faster where the CPU has native bf16, scores differ from fp32 by ~1e-2). ``channels_last``:
    convert the model's weights (in place) to channels-last; ``None`` leaves the memory format
    alone (a trainer validating its live model keeps the layout it trains in).
    ``postprocess``: how ``detect`` / ``detect_batch`` decode and run the NMS — ``"device"``
    (with the outputs, on the GPU or CPU; only survivors are copied; ``"auto"`` is the same) or
    ``"host"`` (through ``raw``'s cache: a repeated image is not recomputed)."""

    def __init__(
        self,
        model: GravityNet,
        config: GravityConfig | None = None,
        device: str | torch.device = "auto",
        *,
        name: str | None = None,
        floor: float = DEFAULT_FLOOR,
        amp: bool = True,
        cpu_bf16: bool = False,
        cache_size: int = 4,
        channels_last: bool | None = True,
        postprocess: str = "auto",
        tta: str = "off",
        tta_params: dict[str, dict[str, float]] | None = None,
        tta_max_pixels: float = TTA_AUTO_MAX_PIXELS,
        area_rules: dict[str, dict] | None = None,
        fov_reference: float | None = None,
        tta_whole: str = "off",
        orient: bool = False,
    ):
        if postprocess not in ("auto", "device", "host"):
            raise ValueError(f"postprocess must be 'auto', 'device' or 'host', got {postprocess!r}")
        if tta not in (*TTA_MODES, "auto"):
            raise ValueError(f"tta must be one of {(*TTA_MODES, 'auto')}, got {tta!r}")
        if tta_whole not in TTA_MODES:
            raise ValueError(f"tta_whole must be one of {TTA_MODES}, got {tta_whole!r}")
        self.config = config or model.config
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if channels_last:  # ~1.4x faster on a 2-core AVX-512 CPU as well as on GPUs
            self.model = self.model.to(memory_format=torch.channels_last)
        self.name = name or f"GravityNet ({self.config.backbone}, step {self.config.step})"
        self.floor = float(floor)
        self.amp = bool(amp)
        self.cpu_bf16 = bool(cpu_bf16)
        self.cache_size = int(cache_size)
        # on a GPU, raw() also runs the NMS for the configured (L, IoU) there and seeds the cache
        self.device_nms = self.device.type == "cuda"
        self.postprocess_on_device = postprocess != "host"
        self._cache: OrderedDict[str, RawOutput] = OrderedDict()
        #: test-time augmentation: "off", "flips", "d8" or "auto" (d8 up to ``tta_max_pixels``
        #: where the model is calibrated for it, else off); see :mod:`.tta`
        self.tta = tta
        self.tta_max_pixels = float(tta_max_pixels)
        #: the mode "auto" uses above ``tta_max_pixels`` (whole mammograms) where the model is
        #: calibrated for it: "off" (one pass, the fastest), "flips" or "d8"
        #: (benchmarks/whole_tta.py: +18 / +20 AUFROC points on real films, 3.3× / 6.4× the time)
        self.tta_whole = tta_whole
        #: γ / NMS of each TTA mode the model was calibrated for (one pass: ``config``'s)
        self.tta_params: dict[str, dict[str, float]] = dict(tta_params or {})
        #: per mode, what raises γ on images with more tissue than the validation images had
        #: (:func:`.config.area_threshold`; from ``gravity calibrate``); none: γ as stored
        self.area_rules: dict[str, dict] = dict(area_rules or {})
        #: the field-of-view diameter (px) the model learned at (metadata ``fov_diameter_px``):
        #: an image whose mask shows another FOV is resampled to it (:mod:`.fov`); None: never
        self.fov_reference = None if fov_reference is None else float(fov_reference)
        #: a mammogram whose mask shows the chest wall off the left side (a right breast, a
        #: landscape frame) runs on the view that puts it on the left, as in training
        #: (:func:`.tta.chest_wall_view`; one pass and the 4 flips; the 8 views hold every
        #: turn). ``from_file`` sets it for a model of task "mc".
        self.orient = bool(orient)

    @classmethod
    def from_file(cls, path, device: str | torch.device = "auto", **kw) -> Predictor:
        from .model_io import load_model

        dev = resolve_device(device)
        loaded = load_model(path, device=dev)
        kw.setdefault("tta_params", tta_calibrations(loaded.metadata))
        kw.setdefault("area_rules", area_rules(loaded.metadata))
        kw.setdefault("fov_reference", loaded.metadata.get("fov_diameter_px"))
        kw.setdefault("orient", loaded.metadata.get("task") == "mc")
        pred = cls(loaded.model, loaded.config, dev, **kw)
        pred.metadata = loaded.metadata
        params = postprocess_defaults(loaded.config, loaded.metadata)
        pred.config = pred.config.replace(threshold=params["threshold"])
        return pred

    def zoom_for(self, mask: np.ndarray | None) -> float:
        """Network pixels per image pixel for an image with this tissue mask: the model's FOV
        diameter over the one the mask shows (1.0: no reference, no measurable FOV, or within
        10 %; :func:`.fov.fov_zoom`)."""
        return 1.0 if self.fov_reference is None else fov_zoom(mask, self.fov_reference)

    # ------------------------------------------------------------------ TTA
    def tta_mode(self, image_shape: tuple[int, ...], mask: np.ndarray | None = None) -> str:
        """The TTA mode used for an image of this shape (and mask): ``tta`` itself, or for
        ``"auto"`` "d8" when the model is calibrated for it and the network input has at most
        ``tta_max_pixels`` pixels, else ``tta_whole`` where calibrated, else "off"."""
        if self.tta != "auto" or "d8" not in self.tta_params:
            return self._mode_for(image_shape, None)
        shape = (int(image_shape[-2]), int(image_shape[-1]))
        ok = mask is not None and np.asarray(mask).shape == shape
        return self._mode_for(shape, self._crop_for(shape, mask) if ok else None)

    def _mode_for(self, shape: tuple[int, ...], box: tuple[int, int, int, int] | None) -> str:
        """:meth:`tta_mode` for an image whose network crop (``_crop_for``) is known."""
        if self.tta != "auto":
            return self.tta
        if "d8" not in self.tta_params:
            return "off"
        h, w = (
            (int(shape[-2]), int(shape[-1])) if box is None else (box[1] - box[0], box[3] - box[2])
        )
        if h * w <= self.tta_max_pixels:
            return "d8"
        return self.tta_whole if self.tta_whole in self.tta_params else "off"

    def params_for(self, mode: str = "off", area_px: float | None = None) -> dict[str, float]:
        """γ / NMS box / IoU to use with a TTA mode: its calibration when the model file has
        one, else the one-pass parameters (``config``'s). With ``area_px`` (the image's pixels
        of tissue) γ is raised where the model's area rule asks for it (an image larger than
        the validation images: the same expected false positives per whole image)."""
        c = self.config
        calibrated = mode != "off" and mode in self.tta_params
        if calibrated:
            p = dict(self.tta_params[mode])
        else:
            p = {
                "threshold": float(c.threshold),
                "nms_box": float(c.nms_box),
                "nms_iou": float(c.nms_iou),
            }
        rule = self.area_rules.get(mode if calibrated else "off")
        p["threshold"] = area_threshold(p["threshold"], rule, area_px)
        return p

    @staticmethod
    def tissue_area(
        shape: tuple[int, ...], mask: np.ndarray | None = None, zoom: float = 1.0
    ) -> float:
        """Pixels an image's false positives can fall on: the mask's, else the whole image;
        counted in the network's pixels (× ``zoom``², the image's ``RawOutput.zoom``), as the
        area rule counts its validation images."""
        n = np.count_nonzero(mask) if mask is not None else int(shape[-2]) * int(shape[-1])
        return float(n) * float(zoom) ** 2

    # ------------------------------------------------------------------ network
    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dt)
        if self.cpu_bf16 and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"Predictor expects a 2-D image, got shape {img.shape}")
        return img

    @property
    def crop_margin(self) -> int | None:
        """Context (px) the network needs around a point: its receptive-field radius rounded up
        to the stride. ``None`` for a model that cannot say (then no crop is made)."""
        radius = getattr(self.model, "receptive_radius", None)
        if radius is None:
            return None
        s = self.config.stride
        return int(math.ceil(radius() / s) * s)

    def _crop_for(self, shape: tuple[int, ...], mask: np.ndarray | None):
        """The region the network runs on for an image of ``shape`` (``crop_box``; ``None``:
        everywhere)."""
        margin = self.crop_margin
        return None if margin is None else crop_box(mask, shape, self.config.stride, margin)

    def _remember(self, key: str, out: RawOutput) -> RawOutput:
        self._cache[key] = out
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _decode(self, logits, offsets, gp, shape, key: str) -> RawOutput:
        """RawOutput of one image from its (N,) logits and (N, 2) offsets (on the device)."""
        scores = torch.sigmoid(logits.float())
        pts = decode(gp, offsets.float(), self.config.d_h)
        out = RawOutput(
            points=pts.cpu().numpy(),
            scores=scores.cpu().numpy(),
            gravity_points=gp.cpu().numpy(),
            image_shape=(int(shape[0]), int(shape[1])),
            d_h=self.config.d_h,
            floor=self.floor,
            key=key,
        )
        if self.device_nms:
            h, w = out.image_shape
            valid = (scores >= self.floor) & (pts[:, 0] >= -0.5) & (pts[:, 0] < h - 0.5)
            valid &= (pts[:, 1] >= -0.5) & (pts[:, 1] < w - 0.5)
            c = self.config
            keep = nms_keep_torch(pts, scores, c.nms_box, c.nms_iou, valid=valid, extent=(h, w))
            kidx = torch.nonzero(keep).flatten().cpu().numpy()
            out._nms_cache[(float(c.nms_box), float(c.nms_iou), float(self.floor))] = {
                "keep": kidx,
                "scores": out.scores[kidx],
                "sorted_min": np.inf,
            }
        return out

    @torch.inference_mode()
    def raw(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        progress: Progress | None = None,
    ) -> RawOutput:
        """Decoded candidates of one 2-D image (cached by content hash and crop).

        ``mask``: the network sees only the mask's bounding box grown by ``crop_margin`` (points
        whose gravity point lies outside it score 0; the output's ``mask`` is not set: one
        output serves every mask with the same crop). ``progress(fraction)`` is called as the
        forward pass advances and with 1.0 at the end; an exception it raises stops the run and
        propagates (nothing is cached)."""
        return self.raw_batch([image], None if mask is None else [mask], progress)[0]

    @torch.inference_mode()
    def raw_batch(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None = None,
        progress: Progress | None = None,
    ) -> list[RawOutput]:
        """``raw`` for several images; those with the same shape and crop (and not cached yet)
        share one forward pass. Results are cached like ``raw``'s. An image whose mask shows a
        field of view of another size than the model's (:meth:`zoom_for`) is resampled to it
        first; its output is in the image's own pixels (``RawOutput.zoom``)."""
        imgs = [self._check(im) for im in images]
        if masks is None:
            masks = [None] * len(imgs)
        if len(masks) != len(imgs):
            raise ValueError(f"raw_batch: {len(imgs)} images but {len(masks)} masks")
        return self._raw_zoomed(imgs, masks, [self.zoom_for(m) for m in masks], progress)

    def _raw_zoomed(
        self,
        imgs: list[np.ndarray],
        masks: Sequence[np.ndarray | None],
        zooms: Sequence[float],
        progress: Progress | None,
    ) -> list[RawOutput]:
        """``raw_batch`` with each image's :meth:`zoom_for` known: the images at another FOV
        scale resampled to the model's, their outputs mapped back to their own pixels."""
        turns = [
            self._turn_for(im.shape, m) if z == 1.0 else 0
            for im, m, z in zip(imgs, masks, zooms, strict=True)
        ]
        if any(turns):
            return self._raw_turned(imgs, masks, turns, zooms, progress)
        if all(z == 1.0 for z in zooms):
            return self._raw_batch(imgs, masks, progress)
        todo = [
            resample(im, m, z) if z != 1.0 else (im, m, None)
            for im, m, z in zip(imgs, masks, zooms, strict=True)
        ]
        raws = self._raw_batch([t[0] for t in todo], [t[1] for t in todo], progress)
        return [
            r if t[2] is None else r.unzoomed(*t[2], im.shape, f"{r.key}|zoom={z:.6g}")
            for r, t, im, z in zip(raws, todo, imgs, zooms, strict=True)
        ]

    def _turn_for(self, shape: tuple[int, ...], mask: np.ndarray | None) -> int:
        """The view (:func:`.tta.view`) the network runs on: the chest wall turned to the left
        (``orient``) for one pass or the 4 flips (which hold no 90° turn); 0 for the 8 views
        (every turn already) or an image without a clear chest-wall side."""
        if not self.orient or mask is None or np.asarray(mask).shape != tuple(shape[-2:]):
            return 0
        if self._mode_for(shape, self._crop_for(shape, mask)) == "d8":
            return 0
        return chest_wall_view(mask)

    def _raw_turned(
        self,
        imgs: list[np.ndarray],
        masks: Sequence[np.ndarray | None],
        turns: Sequence[int],
        zooms: Sequence[float],
        progress: Progress | None,
    ) -> list[RawOutput]:
        """``_raw_zoomed`` of images of which some run turned (``turns``): those run on their
        view and their outputs come back in the image's own pixels."""
        vi = [view(im, k) if k else im for im, k in zip(imgs, turns, strict=True)]
        vm = [view(m, k) if k and m is not None else m for m, k in zip(masks, turns, strict=True)]
        raws = self._raw_zoomed(vi, vm, zooms, progress)
        return [
            r if not k else r.unviewed(k, im.shape, f"{r.key}|turn={k}")
            for r, im, k in zip(raws, imgs, turns, strict=True)
        ]

    def _raw_batch(
        self,
        imgs: list[np.ndarray],
        masks: Sequence[np.ndarray | None],
        progress: Progress | None,
    ) -> list[RawOutput]:
        """``raw_batch`` of images at the model's scale."""
        boxes = [self._crop_for(im.shape, m) for im, m in zip(imgs, masks, strict=True)]
        modes = [self._mode_for(im.shape, b) for im, b in zip(imgs, boxes, strict=True)]
        keys = [
            f"{image_key(im)}|{b}" + ("" if md == "off" else f"|tta={md}")
            for im, b, md in zip(imgs, boxes, modes, strict=True)
        ]
        results: list[RawOutput | None] = [None] * len(imgs)
        todo: dict[tuple, list[int]] = {}
        tta_todo: list[int] = []
        first: dict[str, int] = {}  # duplicates in the list are computed once
        for i, k in enumerate(keys):
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                results[i] = hit
            elif k not in first:
                first[k] = i
                if modes[i] == "off":
                    todo.setdefault((imgs[i].shape, boxes[i]), []).append(i)
                else:
                    tta_todo.append(i)
        jobs = len(todo) + len(tta_todo)
        for g, ((shape, box), idx) in enumerate(todo.items()):
            lo, hi = g / jobs, (g + 1) / jobs
            logits, offsets = self._forward([imgs[i] for i in idx], shape, box, progress, lo, hi)
            gp = self.model.points_for(shape, self.device)
            for b, i in enumerate(idx):
                results[i] = self._decode(logits[b], offsets[b], gp, shape, keys[i])
        for g, i in enumerate(tta_todo, start=len(todo)):
            lo, hi = g / jobs, (g + 1) / jobs
            results[i] = self._raw_tta(imgs[i], masks[i], modes[i], keys[i], progress, lo, hi)
        for i, k in enumerate(keys):
            if results[i] is None:
                results[i] = results[first[k]]
        for i, k in enumerate(keys):
            if k not in self._cache:
                self._remember(k, results[i])
        if progress is not None:
            progress(1.0)
        return results  # type: ignore[return-value]

    def _raw_tta(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        mode: str,
        key: str,
        progress: Progress | None,
        lo: float,
        hi: float,
    ) -> RawOutput:
        """The views' outputs of one image averaged per gravity point (:mod:`.tta`)."""
        c = self.config
        h, w = image.shape
        size = (
            symmetric_size(h, c.step, c.stride, c.layout),
            symmetric_size(w, c.step, c.stride, c.layout),
        )
        padded, pmask = pad_symmetric(image, size, mask)
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for k in views(mode):
            v = view(padded, k)
            vm = None if pmask is None else view(pmask, k)
            groups.setdefault((v.shape, self._crop_for(v.shape, vm)), []).append((k, v))
        # a GPU runs a group's views as one batch; a CPU gains nothing from that, but memory
        chunks = []
        for (shape, box), part in groups.items():
            n = len(part) if self.device.type == "cuda" else 1
            chunks += [(shape, box, part[j : j + n]) for j in range(0, len(part), n)]
        outputs = []
        for g, (shape, box, part) in enumerate(chunks):
            a = lo + (hi - lo) * g / len(chunks)
            b = lo + (hi - lo) * (g + 1) / len(chunks)
            logits, offsets = self._forward([v for _, v in part], shape, box, progress, a, b)
            gp = self.model.points_for(shape, self.device)
            gp_host = gp.cpu().numpy()
            for j, (k, _) in enumerate(part):
                pts = decode(gp, offsets[j].float(), c.d_h).cpu().numpy()
                sc = torch.sigmoid(logits[j].float()).cpu().numpy()
                outputs.append((k, gp_host, pts, sc))
        base_gp = self.model.points_for(size, "cpu").numpy()
        points, scores = fuse_views(base_gp, outputs, size)
        return RawOutput(
            points=points,
            scores=scores,
            gravity_points=base_gp,
            image_shape=(int(h), int(w)),
            d_h=c.d_h,
            floor=self.floor,
            key=key,
            tta=mode,
        )

    def _normalized(self, image: np.ndarray, method: str) -> torch.Tensor:
        """The normalised image on the device; ``"local"`` is computed there (on a GPU the host
        only checks the pixels and copies them, from pinned memory)."""
        if method != "local":
            return torch.from_numpy(normalize_image(image, method)).to(self.device)
        t = torch.from_numpy(as_float_image(image))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return local_contrast(t)

    def _forward(
        self,
        images: list[np.ndarray],
        shape: tuple[int, int],
        box: tuple[int, int, int, int] | None,
        progress: Progress | None,
        lo: float,
        hi: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, N) and offsets (B, N, 2) of same-shape images, the network run on ``box``
        only (``None``: everywhere; empty: nowhere) and -inf logits / zero offsets elsewhere."""
        norm = self.config.normalization
        model, s = self.model, self.config.stride
        hf, wf = -(-shape[0] // s), -(-shape[1] // s)  # the image's feature cells
        if box is not None and box[1] <= box[0]:  # empty mask: no forward pass at all
            n = hf * wf * model.num_points_per_cell
            return (
                torch.full((len(images), n), -math.inf, device=self.device),
                torch.zeros((len(images), n, 2), device=self.device),
            )
        # normalised on the whole image (its statistics), then cropped
        y0, y1, x0, x1 = box if box is not None else (0, shape[0], 0, shape[1])
        x = torch.stack([self._normalized(im, norm) for im in images])
        x = x[:, None, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last)
        with self._autocast(), _forward_progress(model, progress, lo, hi):
            if box is None:
                return model(x)
            cls, reg = model.head_maps(model.features(x))
        # paste the crop's maps into image-sized ones
        r0, c0 = y0 // s, x0 // s
        hc, wc = min(cls.shape[-2], hf - r0), min(cls.shape[-1], wf - c0)
        full_cls = cls.new_full((*cls.shape[:2], hf, wf), -math.inf)
        full_reg = reg.new_zeros((*reg.shape[:2], hf, wf))
        full_cls[..., r0 : r0 + hc, c0 : c0 + wc] = cls[..., :hc, :wc]
        full_reg[..., r0 : r0 + hc, c0 : c0 + wc] = reg[..., :hc, :wc]
        return model.flatten_maps(full_cls, full_reg)

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ detections
    def from_raw(
        self,
        raw: RawOutput,
        mask: np.ndarray | None = None,
        threshold: float | None = None,
        nms_box: float | None = None,
        nms_iou: float | None = None,
    ) -> Detections:
        """Re-apply γ / NMS / mask to cached outputs (never runs the network). Without
        ``mask``, the raw output's own ``mask`` (if any) applies."""
        mask = raw.mask if mask is None else mask
        area = self.tissue_area(raw.image_shape, mask, raw.zoom) if threshold is None else None
        p = self.params_for(raw.tta, area)
        thr = p["threshold"] if threshold is None else float(threshold)
        box = p["nms_box"] if nms_box is None else float(nms_box)
        iou = p["nms_iou"] if nms_iou is None else float(nms_iou)
        if mask is not None and np.asarray(mask).shape != raw.image_shape:
            raise ValueError(
                f"mask shape {np.asarray(mask).shape} does not match image shape {raw.image_shape}"
            )
        return raw.select(thr, box, iou, mask)

    def detect(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        threshold: float | None = None,
        nms_box: float | None = None,
        nms_iou: float | None = None,
    ) -> Detections:
        """Detections of one image; with ``mask`` the network runs on the mask's crop only.
        γ / NMS default to the parameters of the image's TTA mode (:meth:`params_for`)."""
        if self.postprocess_on_device:  # an image in a TTA mode goes through raw() there
            masks = None if mask is None else [mask]
            return self.detect_batch([image], masks, threshold, nms_box, nms_iou)[0]
        return self.from_raw(self.raw(image, mask), mask, threshold, nms_box, nms_iou)

    @torch.inference_mode()
    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None = None,
        threshold: float | None = None,
        nms_box: float | None = None,
        nms_iou: float | None = None,
        progress: Progress | None = None,
    ) -> list[Detections]:
        """Detections of several images; those with the same shape and crop share one forward
        pass. With ``postprocess_on_device`` the decoding, NMS and mask run on the device and only
        the survivors are copied (nothing is cached); otherwise ``from_raw(raw_batch(...))``."""
        imgs = [self._check(im) for im in images]
        masks = [None] * len(imgs) if masks is None else list(masks)
        if len(masks) != len(imgs):
            raise ValueError(f"detect_batch: {len(imgs)} images but {len(masks)} masks")
        for im, m in zip(imgs, masks, strict=True):
            if m is not None and np.asarray(m).shape != im.shape:
                raise ValueError(
                    f"mask shape {np.asarray(m).shape} does not match image shape {im.shape}"
                )
        if not self.postprocess_on_device:
            raws = self.raw_batch(imgs, masks, progress)
            return [
                self.from_raw(r, m, threshold, nms_box, nms_iou)
                for r, m in zip(raws, masks, strict=True)
            ]
        p = self.params_for("off")
        thr = p["threshold"] if threshold is None else float(threshold)
        box = p["nms_box"] if nms_box is None else float(nms_box)
        iou = p["nms_iou"] if nms_iou is None else float(nms_iou)
        groups: dict[tuple, list[int]] = {}
        out: list[Detections | None] = [None] * len(imgs)
        thrs = [thr] * len(imgs)
        for i, (im, m) in enumerate(zip(imgs, masks, strict=True)):
            z = self.zoom_for(m)
            b = self._crop_for(im.shape, m) if z == 1.0 else None
            turned = z == 1.0 and self._turn_for(im.shape, m) != 0
            if z != 1.0 or turned or self._mode_for(im.shape, b) != "off":
                # the raw path: the image resampled to the FOV scale, turned to put its chest
                # wall on the left, or the views averaged
                raw = self._raw_zoomed([im], [m], [z], None)[0]
                out[i] = self.from_raw(raw, m, threshold, nms_box, nms_iou)
                continue
            if threshold is None:  # this image's γ (raised by the area rule on a large one)
                thrs[i] = self.params_for("off", self.tissue_area(im.shape, m))["threshold"]
            # an image whose raw output is cached (raw() was called) is not recomputed; with an
            # empty cache (batch prediction) no content hash is computed at all
            hit = self._cache.get(f"{image_key(im)}|{b}") if self._cache else None
            if hit is not None:
                out[i] = self.from_raw(hit, m, thrs[i], box, iou)
            else:
                groups.setdefault((im.shape, b), []).append(i)
        for g, ((shape, box_px), idx) in enumerate(groups.items()):
            lo, hi = g / len(groups), (g + 1) / len(groups)
            logits, offsets = self._forward([imgs[i] for i in idx], shape, box_px, progress, lo, hi)
            gp = self.model.points_for(shape, self.device)
            for b, i in enumerate(idx):
                pts = decode(gp, offsets[b].float(), self.config.d_h)
                sc = torch.sigmoid(logits[b].float())
                mt = None
                if masks[i] is not None:
                    mt = torch.from_numpy(np.asarray(masks[i], dtype=bool)).to(self.device)
                out[i] = select_on_device(pts, sc, shape, thrs[i], box, iou, mt)
        if progress is not None:
            progress(1.0)
        return out  # type: ignore[return-value]
