"""Predictor: run GravityNet once per image, then re-apply γ / NMS from cached outputs.

``raw(image)`` normalises the image as configured, runs the network once and caches the decoded
candidates (all N gravity points: moved positions + scores) by a hash of the image. ``detect``
and ``from_raw`` post-process from the cache: the NMS over the candidates above a small floor
score is computed once per (L, IoU) and a threshold change is a mask on that kept set (exact for
every γ ≥ floor, see :mod:`napari_gravity.core.postprocess`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..types import Detections
from .config import GravityConfig
from .model import GravityNet
from .normalize import normalize_image
from .postprocess import inside_image, inside_mask, nms_keep, nms_keep_torch

DEFAULT_FLOOR = 1e-3


def image_key(image: np.ndarray) -> str:
    """Content hash of an image (shape, dtype and bytes)."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


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
            keep = idx[nms_keep(self.points[idx], self.scores[idx], box, iou)]
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
        return Detections(points=pts, scores=sc)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Runs a GravityNet on 2-D images. Satisfies the ``Detector`` protocol (``name``,
    ``detect(image, mask=None)``)."""

    def __init__(
        self,
        model: GravityNet,
        config: GravityConfig | None = None,
        device: str | torch.device = "auto",
        *,
        name: str | None = None,
        floor: float = DEFAULT_FLOOR,
        amp: bool = True,
        cache_size: int = 4,
    ):
        self.config = config or model.config
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.name = name or f"GravityNet ({self.config.backbone}, step {self.config.step})"
        self.floor = float(floor)
        self.amp = bool(amp)
        self.cache_size = int(cache_size)
        # on a GPU, raw() also runs the NMS for the configured (L, IoU) there and seeds the cache
        self.device_nms = self.device.type == "cuda"
        self._cache: OrderedDict[str, RawOutput] = OrderedDict()

    @classmethod
    def from_file(cls, path, device: str | torch.device = "auto", **kw) -> Predictor:
        from .model_io import load_model

        dev = _resolve_device(device)
        loaded = load_model(path, device=dev)
        pred = cls(loaded.model, loaded.config, dev, **kw)
        pred.metadata = loaded.metadata
        thr = loaded.metadata.get("threshold")
        if isinstance(thr, (int, float)) and 0 <= thr <= 1:
            pred.config = pred.config.replace(threshold=float(thr))
        return pred

    # ------------------------------------------------------------------ network
    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dt)
        return contextlib.nullcontext()

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"Predictor expects a 2-D image, got shape {img.shape}")
        return img

    def _remember(self, key: str, out: RawOutput) -> RawOutput:
        self._cache[key] = out
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _decode(self, logits, offsets, gp, shape, key: str) -> RawOutput:
        """RawOutput of one image from its (N,) logits and (N, 2) offsets (on the device)."""
        scores = torch.sigmoid(logits.float())
        pts = gp + offsets.float() * self.config.d_h
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
    def raw(self, image: np.ndarray) -> RawOutput:
        """Decoded candidates of one 2-D image (cached by content hash)."""
        return self.raw_batch([image])[0]

    @torch.inference_mode()
    def raw_batch(self, images: list[np.ndarray]) -> list[RawOutput]:
        """``raw`` for several images; those of the same shape (and not cached yet) share one
        forward pass. Results are cached like ``raw``'s."""
        imgs = [self._check(im) for im in images]
        keys = [image_key(im) for im in imgs]
        results: list[RawOutput | None] = [None] * len(imgs)
        todo: dict[tuple[int, int], list[int]] = {}
        first: dict[str, int] = {}  # duplicates in the list are computed once
        for i, k in enumerate(keys):
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                results[i] = hit
            elif k not in first:
                first[k] = i
                todo.setdefault(imgs[i].shape, []).append(i)
        norm = self.config.normalization
        for shape, idx in todo.items():
            x = torch.stack([torch.from_numpy(normalize_image(imgs[i], norm)) for i in idx])
            x = x[:, None].to(self.device)
            with self._autocast():
                logits, offsets = self.model(x)
            gp = self.model.points_for(shape, self.device)
            for b, i in enumerate(idx):
                results[i] = self._decode(logits[b], offsets[b], gp, shape, keys[i])
        for i, k in enumerate(keys):
            if results[i] is None:
                results[i] = results[first[k]]
        for i, k in enumerate(keys):
            if k not in self._cache:
                self._remember(k, results[i])
        return results  # type: ignore[return-value]

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
        c = self.config
        mask = raw.mask if mask is None else mask
        thr = c.threshold if threshold is None else float(threshold)
        box = c.nms_box if nms_box is None else float(nms_box)
        iou = c.nms_iou if nms_iou is None else float(nms_iou)
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
        return self.from_raw(self.raw(image), mask, threshold, nms_box, nms_iou)
