"""The Qt-free GravityNet core: gravity points, configuration, model, loss, post-processing,
prediction and model files. Never imports napari, Qt or ``training``.

The numpy-only parts (gravity points, configuration, normalisation, post-processing) are imported
here; the torch-backed names are imported on first use, so ``import napari_gravity.core`` and the
classical detectors that use ``normalize_image`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Eager imports bind the function names *after* their same-named submodules are imported, so
# ``napari_gravity.core.postprocess`` / ``.gravity_points`` are the functions, as documented.
from .config import GravityConfig, postprocess_defaults
from .gravity_points import gravity_points, n_gravity_points
from .normalize import normalize_image
from .postprocess import decode, nms_points, postprocess

_LAZY = {
    "GravityLoss": "loss",
    "GravityNet": "model",
    "LoadedModel": "model_io",
    "ModelFileError": "model_io",
    "load_model": "model_io",
    "read_model_metadata": "model_io",
    "save_model": "model_io",
    "Predictor": "predictor",
    "RawOutput": "predictor",
}

__all__ = [
    "GravityConfig",
    "decode",
    "gravity_points",
    "n_gravity_points",
    "nms_points",
    "normalize_image",
    "postprocess",
    "postprocess_defaults",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
