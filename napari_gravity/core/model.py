"""GravityNet: a ResNet backbone and two subnets (classification, regression) whose outputs
map one-to-one onto the gravity points (paper 000, section 3.2).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import GravityConfig
from .gravity_points import gravity_points, points_per_axis

log = logging.getLogger(__name__)

PRIOR = 0.01  # classification prior π: bias −log((1−π)/π)
_LAYER_FOR_STRIDE = {8: "layer2", 16: "layer3", 32: "layer4"}


def _resnet(name: str) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file without executing code: ``.safetensors`` or a ``torch.save`` file
    read with ``torch.load(weights_only=True)``. Nested ``{"state_dict": ...}`` / ``{"model": ...}``
    wrappers are unwrapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pretrained weights file not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from napari_gravity.fileio import torch_load_error

        raise ValueError(
            f"{path}: cannot read pretrained weights ({torch_load_error(exc)})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _head(in_ch: int, ch: int, out_ch: int, norm: str | None, depth: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_ch
    for _ in range(depth):
        layers.append(nn.Conv2d(c, ch, 3, padding=1))
        if norm == "gn":
            layers.append(nn.GroupNorm(32, ch))
        layers.append(nn.ReLU(inplace=True))
        c = ch
    layers.append(nn.Conv2d(ch, out_ch, 3, padding=1))
    head = nn.Sequential(*layers)
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return head


class GravityNet(nn.Module):
    """GravityNet.

    ``forward(x)`` takes (B, C, H, W) float images (C = 1, or 3 when ``config.in_channels`` is
    3; a 1-channel input is replicated) of any size, pads them (bottom/right, zeros) to a multiple
    of the stride, and returns ``logits`` (B, N) and ``offsets`` (B, N, 2) where N and the order
    are those of ``gravity_points((H, W), step, stride=, layout=)``. Offsets are (dy, dx) in units
    of the hooking distance d_h: the predicted position is ``point + d_h · offset``.

    ``pretrained``: optional path to local ImageNet ResNet weights (safetensors, or a torch file
    loaded with ``weights_only=True``). Without it the backbone is trained from scratch
    (``self.init_message`` says which).
    """

    def __init__(self, config: GravityConfig, pretrained: str | os.PathLike | None = None):
        super().__init__()
        self.config = config
        stride = config.stride
        net = _resnet(config.backbone)
        if pretrained is not None:
            sd = load_state_dict_file(pretrained)
            try:
                missing, _unexpected = net.load_state_dict(sd, strict=False)
            except RuntimeError as exc:
                first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
                raise ValueError(
                    f"{os.fspath(pretrained)}: not {config.backbone} weights ({first})"
                ) from exc
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing:
                raise ValueError(
                    f"{os.fspath(pretrained)}: not {config.backbone} weights "
                    f"(missing {len(missing)} tensors, e.g. {missing[0]})"
                )
            self.init_message = (
                f"backbone {config.backbone} initialised from {os.fspath(pretrained)}"
            )
        else:
            self.init_message = (
                f"no pretrained weights given: training the {config.backbone} backbone from scratch"
            )
        log.info(self.init_message)

        if config.in_channels == 1:
            old = net.conv1
            conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                if pretrained is not None:
                    conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
                else:
                    nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            net.conv1 = conv1

        last = _LAYER_FOR_STRIDE[stride]
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            mods[name] = getattr(net, name)
            if name == last:
                break
        self.backbone = nn.Sequential(mods)
        layer = getattr(net, last)
        feat_ch = (
            layer[-1].conv3.out_channels
            if hasattr(layer[-1], "conv3")
            else layer[-1].conv2.out_channels
        )
        self.feature_channels = feat_ch

        self.n_per_axis = points_per_axis(config.step, stride)
        self.num_points_per_cell = self.n_per_axis**2
        a = self.num_points_per_cell
        self.cls_head = _head(feat_ch, config.head_channels, a, config.head_norm)
        self.reg_head = _head(feat_ch, config.head_channels, 2 * a, config.head_norm)
        with torch.no_grad():
            self.cls_head[-1].bias.fill_(-math.log((1 - PRIOR) / PRIOR))
            self.reg_head[-1].weight.zero_()
            self.reg_head[-1].bias.zero_()
        self._gp_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    # ------------------------------------------------------------------ pieces
    @property
    def stride(self) -> int:
        return self.config.stride

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (bottom/right) to a multiple of the stride; replicate 1→3 channels if needed."""
        if x.ndim != 4:
            raise ValueError(f"GravityNet expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        c = x.shape[1]
        if c != self.config.in_channels:
            if c == 1 and self.config.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(
                    f"GravityNet built for {self.config.in_channels} input channel(s), got {c}"
                )
        s = self.stride
        ph, pw = (-x.shape[-2]) % s, (-x.shape[-1]) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, C_feat, ceil(H/stride), ceil(W/stride)) of a raw input."""
        return self.backbone(self.pad(x))

    def head_maps(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subnet outputs as maps: classification (B, A, Hf, Wf), channel = the point's row-major
        index in its window; regression (B, 2A, Hf, Wf), channel = 2·index + (0: dy, 1: dx)."""
        return self.cls_head(feat), self.reg_head(feat)

    @staticmethod
    def flatten_maps(cls: torch.Tensor, reg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``head_maps`` outputs in gravity-point order: logits (B, N), offsets (B, N, 2)."""
        b, a, hf, wf = cls.shape
        logits = cls.permute(0, 2, 3, 1).reshape(b, hf * wf * a)
        offsets = reg.permute(0, 2, 3, 1).reshape(b, hf * wf * a, 2)
        return logits, offsets

    def heads(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subnet outputs reshaped to gravity-point order: logits (B, N), offsets (B, N, 2)."""
        return self.flatten_maps(*self.head_maps(feat))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(x))

    def receptive_radius(self) -> int:
        """Theoretical receptive-field radius (px) of an output: every k×k convolution or pooling
        in the backbone and one subnet adds (k − 1)/2 · its input's stride (1×1 shortcut
        convolutions add nothing; the strided 3×3/7×7 layers carry the stride)."""
        r, jump = 0.0, 1
        layers = [*self.backbone.modules(), *self.cls_head.modules()]
        for m in layers:
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                st = m.stride if isinstance(m.stride, int) else m.stride[0]
                dil = getattr(m, "dilation", 1)
                dil = dil if isinstance(dil, int) else dil[0]
                if k > 1:
                    r += (k - 1) / 2 * dil * jump
                    jump *= st
        return math.ceil(r)

    def points_for(
        self, shape: tuple[int, ...], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Gravity points (N, 2) float32 (y, x) for an input of spatial shape (H, W), built once
        per shape and device (no host-to-device copy per image)."""
        key = (int(shape[-2]), int(shape[-1]), str(torch.device(device or "cpu")))
        gp = self._gp_cache.get(key)
        if gp is None:
            c = self.config
            gp = torch.from_numpy(
                gravity_points(key[:2], c.step, stride=c.stride, layout=c.layout)
            ).float()
            if len(self._gp_cache) > 16:
                self._gp_cache.clear()
            gp = gp.to(key[2])
            self._gp_cache[key] = gp
        return gp
