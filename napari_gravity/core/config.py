"""GravityConfig: everything that defines a GravityNet model and how to use its outputs.

Stored verbatim (``to_dict()``) in every model file, so a model file is self-describing.

The γ / NMS defaults live here and only here: the field defaults of :class:`GravityConfig`, and
:func:`postprocess_defaults`, which resolves the parameters a model is used with (its file's
calibrated threshold over its configuration's). Callers (predictor, CLI, GUI) ask it rather than
writing ``0.5`` / ``7.0`` again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .gravity_points import LAYOUTS, points_per_axis
from .tta import AVERAGED

#: The field-of-view diameters (px) a model file may name (metadata ``fov_diameter_px``, see
#: :mod:`.fov`): checked where the metadata is read and where ``gravity calibrate`` writes it.
FOV_DIAMETER_RANGE = (100.0, 20000.0)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
STRIDES = (8, 16, 32)  # ResNet layer2 / layer3 / layer4 (the paper's)
HEAD_NORMS = (None, "gn")
NORMALIZATIONS = ("minmax", "percentile", "local", "none")


class ConfigFieldError(ValueError):
    """A configuration value that fails validation: ``field`` names it, ``detail`` says why;
    ``str()`` is ``"{owner}.{field}: {detail}"``."""

    def __init__(self, field: str, detail: str, owner: str = "GravityConfig") -> None:
        super().__init__(f"{owner}.{field}: {detail}")
        self.field, self.detail = field, detail


@dataclass
class GravityConfig:
    """GravityNet configuration.

    Defaults follow the paper's best microcalcification model (ResNet-34, step 10, d_h = step,
    feature stride 32 = ``layer4``, NMS box L = 7, min-max normalisation).

    - ``backbone``: one of ``resnet18/34/50/101/152`` (torchvision).
    - ``step``: gravity-point spacing in the K×K feature grid, ``0 < step <= stride - 2``.
    - ``hooking_distance``: d_h in pixels; ``None`` means d_h = step (the paper's choice).
    - ``stride``: 32 (``layer4``, the paper), 16 (``layer3``) or 8 (``layer2``) — the window size
      K. Smaller strides give denser, higher-resolution features and learn much faster from scratch
      on small data (see docs/notes/core.md), at a higher cost per image.
    - ``layout``: ``"paper"`` (counts of the paper's tables) or ``"uniform"`` (centred lattice).
    - ``in_channels``: 1 (grayscale, ``conv1`` adapted) or 3 (gray replicated to RGB).
    - ``head_channels``: width of the four 3×3 conv layers of each subnet (256 in the paper).
    - ``head_norm``: ``None`` (paper) or ``"gn"`` (GroupNorm(32) after each head conv).
    - ``nms_box``: L, the side of the NMS box in pixels (7 for MCs, 3 for MAs).
    - ``nms_iou``: merge boxes whose IoU exceeds this (0.5).
    - ``threshold``: default score threshold γ.
    - ``normalization``: ``"minmax"`` (paper), ``"percentile"`` (robust 0.5-99.5 %), ``"local"``
      (local contrast, robust to acquisition; the shipped models) or ``"none"``.
    """

    backbone: str = "resnet34"
    step: int = 10
    hooking_distance: float | None = None
    stride: int = 32
    layout: str = "paper"
    in_channels: int = 1
    head_channels: int = 256
    head_norm: str | None = None
    nms_box: float = 7.0
    nms_iou: float = 0.5
    threshold: float = 0.5
    normalization: str = "minmax"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def d_h(self) -> float:
        """Hooking distance in pixels (``hooking_distance`` or ``step``)."""
        return float(self.step if self.hooking_distance is None else self.hooking_distance)

    @property
    def points_per_window(self) -> int:
        """A: gravity points per feature cell (outputs per cell of the classification head)."""
        return points_per_axis(self.step, self.stride) ** 2

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def bad(field: str, msg: str) -> ConfigFieldError:
            return ConfigFieldError(field, msg)

        if self.backbone not in BACKBONES:
            raise bad("backbone", f"{self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if isinstance(self.stride, bool) or self.stride not in STRIDES:
            raise bad("stride", f"{self.stride!r} is not one of {STRIDES} (32 = layer4, the paper)")
        if isinstance(self.step, bool) or not isinstance(self.step, (int, float)):
            raise bad("step", f"must be a number, got {self.step!r}")
        if float(self.step) != int(self.step):
            raise bad("step", f"must be a whole number of pixels, got {self.step!r}")
        self.step = int(self.step)
        if not (0 < self.step <= self.stride - 2):
            raise bad(
                "step",
                f"must satisfy 0 < step <= K-2 = {self.stride - 2} for stride {self.stride}, "
                f"got {self.step}",
            )
        if self.hooking_distance is not None:
            if not isinstance(self.hooking_distance, (int, float)) or isinstance(
                self.hooking_distance, bool
            ):
                raise bad(
                    "hooking_distance", f"must be a number or None, got {self.hooking_distance!r}"
                )
            if not self.hooking_distance > 0:
                raise bad("hooking_distance", f"must be > 0, got {self.hooking_distance}")
            self.hooking_distance = float(self.hooking_distance)
        if self.layout not in LAYOUTS:
            raise bad("layout", f"{self.layout!r} is not one of {LAYOUTS}")
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            raise bad("in_channels", f"must be 1 or 3, got {self.in_channels!r}")
        if not isinstance(self.head_channels, int) or self.head_channels <= 0:
            raise bad("head_channels", f"must be a positive integer, got {self.head_channels!r}")
        if self.head_norm not in HEAD_NORMS:
            raise bad("head_norm", f"{self.head_norm!r} is not one of {HEAD_NORMS}")
        if self.head_norm == "gn" and self.head_channels % 32 != 0:
            raise bad("head_channels", "must be a multiple of 32 with head_norm='gn'")
        if not isinstance(self.nms_box, (int, float)) or not self.nms_box > 0:
            raise bad("nms_box", f"must be > 0 pixels, got {self.nms_box!r}")
        self.nms_box = float(self.nms_box)
        if not isinstance(self.nms_iou, (int, float)) or not (0.0 <= self.nms_iou < 1.0):
            raise bad("nms_iou", f"must be in [0, 1), got {self.nms_iou!r}")
        self.nms_iou = float(self.nms_iou)
        if not isinstance(self.threshold, (int, float)) or not (0.0 <= self.threshold <= 1.0):
            raise bad("threshold", f"must be in [0, 1], got {self.threshold!r}")
        self.threshold = float(self.threshold)
        if self.normalization not in NORMALIZATIONS:
            raise bad("normalization", f"{self.normalization!r} is not one of {NORMALIZATIONS}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GravityConfig:
        if not isinstance(d, dict):
            raise ValueError(f"GravityConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"GravityConfig: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys are {', '.join(sorted(known))}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> GravityConfig:
        """A copy with some fields changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})


#: The post-processing parameters a GUI or CLI exposes: score threshold γ, NMS box L, NMS IoU.
POSTPROCESS_KEYS = ("threshold", "nms_box", "nms_iou")


def _valid_threshold(v: Any) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0.0 <= v <= 1.0
    )


def postprocess_defaults(
    config: GravityConfig | None = None, metadata: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """The γ / NMS parameters to use a model with: ``{"threshold", "nms_box", "nms_iou"}``.

    ``threshold``: the model file's calibrated ``metadata["threshold"]`` when it is a number in
    [0, 1], else ``config.threshold``; ``nms_box`` / ``nms_iou`` from ``config``. Without a
    config (a classical detector), :class:`GravityConfig`'s defaults.
    """
    if config is None:
        defaults = {f.name: f.default for f in dataclasses.fields(GravityConfig)}
        out = {k: float(defaults[k]) for k in POSTPROCESS_KEYS}
    else:
        out = {k: float(getattr(config, k)) for k in POSTPROCESS_KEYS}
    thr = (metadata or {}).get("threshold")
    if _valid_threshold(thr):
        out["threshold"] = float(thr)
    return out


def tta_calibrations(metadata: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """γ / NMS of each test-time augmentation mode a model file was calibrated for
    (``metadata["tta"] = {mode: {"threshold", "nms_box", "nms_iou"}}``, written by
    ``gravity calibrate``); entries that are not complete and valid are left out."""
    out: dict[str, dict[str, float]] = {}
    table = (metadata or {}).get("tta")
    if not isinstance(table, Mapping):
        return out
    for mode, rec in table.items():
        if mode not in AVERAGED or not isinstance(rec, Mapping):
            continue
        if not _valid_threshold(rec.get("threshold")):
            continue
        try:
            box, iou = float(rec["nms_box"]), float(rec["nms_iou"])
        except (KeyError, TypeError, ValueError):
            continue
        if box > 0 and 0 < iou <= 1:
            out[mode] = {"threshold": float(rec["threshold"]), "nms_box": box, "nms_iou": iou}
    return out


def area_rules(metadata: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The area rule of each mode ("off" = one pass, "flips", "d8") a model file carries (written
    by ``gravity calibrate``): ``{"fp_scores", "tissue_px", "target_fppi"}``, see
    :func:`area_threshold`. Malformed records are left out."""
    md = metadata or {}
    found = {"off": (md.get("calibration") or {}).get("area_rule")}
    tta = md.get("tta")
    if isinstance(tta, Mapping):
        found.update(
            {m: (r or {}).get("area_rule") for m, r in tta.items() if isinstance(r, Mapping)}
        )
    out = {}
    for mode, rule in found.items():
        if not isinstance(rule, Mapping):
            continue
        try:
            scores = np.asarray(rule["fp_scores"], dtype=np.float64).reshape(-1)
            tissue, target = float(rule["tissue_px"]), float(rule["target_fppi"])
        except (KeyError, TypeError, ValueError):
            continue
        if tissue > 0 and target > 0 and np.isfinite(scores).all():
            out[mode] = {
                "fp_scores": np.sort(scores)[::-1],
                "tissue_px": tissue,
                "target_fppi": target,
            }
    return out


def area_threshold(
    threshold: float, rule: Mapping[str, Any] | None, area_px: float | None
) -> float:
    """γ for an image with ``area_px`` pixels of tissue: the calibrated ``threshold`` (set at
    ``target_fppi`` false positives per *validation image*), raised where the image is larger
    than the validation images so that the expected number of false positives on the whole image
    stays at ``target_fppi``. The validation set's false positives above ``threshold``
    (``fp_scores``) over its ``tissue_px`` pixels of tissue give the false-positive density at
    each score; an image of ``area_px`` may have ``target_fppi · tissue_px / area_px`` of them.
    Never below ``threshold``; unchanged without a rule or an area."""
    if rule is None or area_px is None or not area_px > 0:
        return float(threshold)
    scores = rule["fp_scores"]
    allowed = rule["target_fppi"] * rule["tissue_px"] / float(area_px)
    k = int(np.floor(allowed))
    if k >= len(scores):
        return float(threshold)
    # a score strictly above the (k+1)-th highest validation FP: at most k of them reach it
    return float(max(threshold, np.nextafter(scores[k], np.inf)))
