"""The anchor-based comparator: torchvision RetinaNet with small anchors (8²–128², paper 000).

Trained through the same data pipeline (``model: retinanet`` in a config) and predicting points
(box centres) through the same CSV, so the two detectors are compared on identical data and
evaluation. No pretrained weights are ever downloaded (``weights=None, weights_backbone=None``).

Ground-truth boxes are lesion centres ± max(radius, ``min_box_radius``): the smallest anchor is
8×8, so boxes narrower than that would never reach the anchor-matching IoU of 0.5 (torchvision
still force-matches each box to its best anchor). Backbone: ResNet-18/34/50 with an FPN on
layers 2-4 plus P6/P7 (strides 8-128), one anchor size per level, aspect ratio 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_gravity.core.config import ConfigFieldError
from napari_gravity.types import Detections

RETINA_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "anchor_sizes": [8, 16, 32, 64, 128],
    "min_box_radius": 4.0,
    "normalization": "minmax",
    "score_thresh": 0.01,
    "box_nms_iou": 0.5,
    "detections_per_img": 1000,
    "threshold": 0.5,
}
_BACKBONES = ("resnet18", "resnet34", "resnet50")


def validate_retinanet_net(net: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check the ``net`` section of a RetinaNet config (errors are
    ``ConfigFieldError`` naming ``net.KEY``)."""

    def bad(key: str, detail: str) -> ConfigFieldError:
        return ConfigFieldError(key, detail, owner="net")

    unknown = sorted(set(net) - set(RETINA_DEFAULTS))
    if unknown:
        known = ", ".join(sorted(RETINA_DEFAULTS))
        raise bad(unknown[0], f"unknown key for model: retinanet; known: {known}")
    out = {**RETINA_DEFAULTS, **net}
    if out["backbone"] not in _BACKBONES:
        raise bad("backbone", f"{out['backbone']!r} is not one of {_BACKBONES}")
    a = out["anchor_sizes"]
    if not (
        isinstance(a, list)
        and len(a) == 5
        and all(isinstance(v, (int, float)) and v > 0 for v in a)
    ):
        raise bad("anchor_sizes", f"must be 5 positive sizes (P3-P7), got {a!r}")
    for key in ("min_box_radius", "score_thresh", "box_nms_iou", "threshold"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise bad(key, f"must be a number >= 0, got {v!r}")
        out[key] = float(v)
    if out["normalization"] not in ("minmax", "percentile", "none"):
        raise bad("normalization", f"{out['normalization']!r} is not minmax/percentile/none")
    if not isinstance(out["detections_per_img"], int) or out["detections_per_img"] < 1:
        raise bad(
            "detections_per_img",
            f"must be a positive integer, got {out['detections_per_img']!r}",
        )
    return out


@dataclass(frozen=True)
class RetinaNetConfig:
    """The validated ``net`` section of a RetinaNet config (see :data:`RETINA_DEFAULTS`)."""

    backbone: str
    anchor_sizes: tuple[float, ...]
    min_box_radius: float
    normalization: str
    score_thresh: float
    box_nms_iou: float
    detections_per_img: int
    threshold: float

    @classmethod
    def from_dict(cls, net: dict[str, Any]) -> RetinaNetConfig:
        """Validate (:func:`validate_retinanet_net`; errors name ``net.KEY``) and fill defaults."""
        d = validate_retinanet_net(net)
        return cls(**{**d, "anchor_sizes": tuple(d["anchor_sizes"])})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "anchor_sizes": list(self.anchor_sizes)}


def build_retinanet(net: RetinaNetConfig | dict[str, Any]) -> torch.nn.Module:
    import torchvision
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    if isinstance(net, dict):
        net = RetinaNetConfig.from_dict(net)
    resnet = getattr(torchvision.models, net.backbone)(weights=None)
    backbone = _resnet_fpn_extractor(
        resnet, trainable_layers=5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    anchors = AnchorGenerator(tuple((int(s),) for s in net.anchor_sizes), ((1.0,),) * 5)
    return RetinaNet(
        backbone,
        num_classes=2,
        anchor_generator=anchors,
        min_size=256,
        max_size=256,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        score_thresh=net.score_thresh,
        nms_thresh=net.box_nms_iou,
        detections_per_img=net.detections_per_img,
        topk_candidates=1000,
    )


def _to_list(images: torch.Tensor) -> list[torch.Tensor]:
    return [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]


def _set_size(model: torch.nn.Module, h: int, w: int) -> None:
    """No resizing: the transform's min/max size equal to the image's own."""
    t = model.transform
    t.min_size = (min(h, w),)
    t.max_size = max(h, w)


def boxes_from_points(t: torch.Tensor, min_r: float) -> torch.Tensor:
    """(M,3) y, x, radius → (M,4) x1, y1, x2, y2 with half-size max(radius, min_r)."""
    if t.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=t.device)
    r = t[:, 2].clamp(min=min_r) if t.shape[1] > 2 else torch.full_like(t[:, 0], min_r)
    y, x = t[:, 0], t[:, 1]
    return torch.stack([x - r, y - r, x + r, y + r], dim=1).float()


class RetinaDetector:
    """``detect(image, mask=None, threshold=None)`` → point Detections (box centres)."""

    def __init__(
        self, model: torch.nn.Module, net: RetinaNetConfig, device: str | torch.device = "cpu"
    ):
        self.model = model
        self.net = net
        self.device = torch.device(device)
        self.threshold = net.threshold

    @torch.no_grad()
    def detect(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        threshold: float | None = None,
        **_: Any,
    ) -> Detections:
        from napari_gravity.core.normalize import normalize_image
        from napari_gravity.core.postprocess import inside_mask

        thr = self.threshold if threshold is None else float(threshold)
        img = normalize_image(np.asarray(image), self.net.normalization, mask=mask)
        h, w = img.shape
        was_training = self.model.training
        self.model.eval()
        _set_size(self.model, h, w)
        x = torch.from_numpy(img)[None].to(self.device)
        out = self.model(_to_list(x[None]))[0]
        if was_training:
            self.model.train()
        b = out["boxes"].float().cpu().numpy()
        s = out["scores"].float().cpu().numpy()
        pts = (
            np.stack([(b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2], axis=1)
            if len(b)
            else np.zeros((0, 2))
        )
        keep = s >= thr
        if mask is not None and len(pts):
            keep &= inside_mask(pts, np.asarray(mask, bool))
        order = np.argsort(-s[keep], kind="stable")
        return Detections(pts[keep][order], s[keep][order])


class RetinaAdapter:
    kind = "retinanet"

    def __init__(self, cfg, init: str | os.PathLike[str] | None = None) -> None:
        self.parent_metadata: dict[str, Any] = {}
        if init is not None:
            model, net, md = _load(init)
            self.model, self.net, self.parent_metadata = model, net, md
            self.init_message = f"RetinaNet initialised from {init}"
        else:
            self.net = cfg.net
            self.model = build_retinanet(self.net)
            self.init_message = (
                f"RetinaNet ({self.net.backbone}-FPN, anchors {list(self.net.anchor_sizes)}) "
                "from scratch"
            )

    def losses(
        self, net: torch.nn.Module, images: torch.Tensor, targets: list[torch.Tensor]
    ) -> dict:
        h, w = images.shape[-2:]
        _set_size(self.model, h, w)
        tg = [
            {
                "boxes": boxes_from_points(t, self.net.min_box_radius),
                "labels": torch.ones(len(t), dtype=torch.int64, device=images.device),
            }
            for t in targets
        ]
        ld = net(_to_list(images), tg)
        cls, reg = ld["classification"], ld["bbox_regression"]
        return {"loss": cls + reg, "cls": cls.detach(), "reg": reg.detach(), "n_pos": None}

    def detector(self, device: torch.device) -> RetinaDetector:
        return RetinaDetector(self.model, self.net, device)

    def net_config(self) -> dict[str, Any]:
        return self.net.to_dict()

    @property
    def normalization(self) -> str:
        return self.net.normalization

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        from safetensors.torch import load_file

        sd = load_file(str(path))
        self.model.load_state_dict({k: v.float() for k, v in sd.items()})

    def save(
        self, path: Path, metadata: dict[str, Any], threshold: float, fp16: bool = False
    ) -> Path:
        from safetensors.torch import save_file

        from napari_gravity.fileio import atomic_write

        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if fp16:
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        net = {**self.net.to_dict(), "threshold": float(threshold)}
        md = {
            **metadata,
            "format_version": 1,
            "model": "retinanet",
            "net": net,
            "threshold": float(threshold),
        }
        meta = {k: json.dumps(v) for k, v in md.items()}
        atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=meta))
        return Path(path)


def _load(
    path: str | os.PathLike[str],
) -> tuple[torch.nn.Module, RetinaNetConfig, dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = str(path)
    try:
        with safe_open(p, framework="pt") as f:
            raw = f.metadata() or {}
        md = {k: json.loads(v) for k, v in raw.items()}
    except Exception as exc:
        raise ValueError(f"{p}: not a RetinaNet model file ({exc})") from None
    if md.get("model") != "retinanet":
        raise ValueError(f"{p}: not a RetinaNet model file (model = {md.get('model')!r})")
    net = RetinaNetConfig.from_dict({k: v for k, v in md["net"].items() if k in RETINA_DEFAULTS})
    model = build_retinanet(net)
    sd = load_file(p)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model, net, md


def load_retinanet(path: str | os.PathLike[str], device: str = "cpu") -> RetinaDetector:
    model, net, _ = _load(path)
    model.to(device).eval()
    return RetinaDetector(model, net, device)
