"""Model adapters: the loop trains any detector through one small interface.

An adapter owns an ``nn.Module`` (``.model``) and knows how to compute the training loss of a
batch of tiles, how to build a ``detect(image, mask=, threshold=)`` object for validation (the
same code path as prediction), and how to save a model file. GravityNet uses the core
(``GravityNet``, ``GravityLoss``, ``Predictor``, ``model_io``); RetinaNet lives in
``training.retinanet``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_quietly(path: str | os.PathLike[str]):
    """``load_model`` without the log line of the empty net it builds before loading the
    weights ("training the backbone from scratch"), which is not what happens."""
    from napari_gravity.core.model_io import load_model

    core_log = logging.getLogger("napari_gravity.core.model")
    level = core_log.level
    core_log.setLevel(logging.WARNING)
    try:
        return load_model(path, device="cpu")
    finally:
        core_log.setLevel(level)


class GravityAdapter:
    kind = "gravitynet"

    def __init__(self, cfg: TrainConfig, init: str | os.PathLike[str] | None = None) -> None:
        from napari_gravity.core.loss import GravityLoss
        from napari_gravity.core.model import GravityNet

        self.parent: dict[str, Any] | None = None
        if init is not None:
            loaded = _load_quietly(init)
            self.model = loaded.model
            self.config = loaded.config
            self.parent_metadata = dict(loaded.metadata or {})
            self.init_message = f"initialised from model file {init}"
        else:
            self.config = cfg.net.replace()  # a copy: the run's config stays as validated
            self.model = GravityNet(self.config, pretrained=cfg.pretrained)
            self.parent_metadata = {}
            self.init_message = getattr(self.model, "init_message", "")
        self.model.float()
        t = cfg.train
        self.loss_fn = GravityLoss(
            self.config.d_h,
            alpha=t.focal_alpha,
            gamma=t.focal_gamma,
            lam=t.lambda_reg,
            ignore_gap=t.ignore_gap,
        )

    def losses(
        self, net: torch.nn.Module, images: torch.Tensor, targets: list[torch.Tensor]
    ) -> dict:
        logits, offsets = net(images)
        gp = self.model.points_for(images.shape[-2:], device=images.device)
        return self.loss_fn(logits, offsets, gp, [t[:, :2] for t in targets])

    def detector(self, device: torch.device):
        from napari_gravity.core.predictor import Predictor

        # a copy: the Predictor lays its model out as inference does (channels-last), so the
        # validation scores are those of the exported model, while the live training model
        # keeps the memory format train.channels_last gave it
        return Predictor(copy.deepcopy(self.model), self.config, device=str(device))

    def net_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def normalization(self) -> str:
        return self.config.normalization

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load the weights of a model file written by :meth:`save` into ``self.model``."""

        loaded = _load_quietly(path)
        sd = {k: v.float() for k, v in loaded.model.state_dict().items()}
        self.model.load_state_dict(sd)

    def save(
        self, path: Path, metadata: dict[str, Any], threshold: float, fp16: bool = False
    ) -> Path:
        from napari_gravity.core.model_io import save_model

        cfg = self.config.replace(threshold=float(min(max(threshold, 0.0), 1.0)))
        md = dict(metadata)
        md["threshold"] = float(threshold)
        save_model(path, self.model, cfg, md, half=fp16)
        return Path(path)


def build_adapter(cfg: TrainConfig, init: str | os.PathLike[str] | None = None):
    if cfg.model == "retinanet":
        from training.retinanet import RetinaAdapter

        return RetinaAdapter(cfg, init)
    return GravityAdapter(cfg, init)
