"""napari-gravity: GravityNet small-lesion detection.

The Qt-free core lives in :mod:`napari_gravity.core` (gravity points, model, loss,
post-processing, prediction), :mod:`napari_gravity.data` and
:mod:`napari_gravity.evaluation`; the napari plugin layer lives in
:mod:`napari_gravity.plugin` and is the only part that imports napari or Qt.

The public Python API (for a notebook or a script)::

    import napari_gravity as ng

    pred = ng.load_predictor("default_mc")          # or "default", "default_ma", a path
    dets = pred.detect(image)                       # Detections: (y, x) points + scores
    res = ng.froc_curve(predictions, samples)       # lesion-based FROC / AUFROC
    ng.fit(images, points, task="mc", out="my_model.safetensors", epochs=20)
    ng.train("training/configs/mc.yaml")            # a full training configuration

``import napari_gravity`` is light: nothing heavy (torch, numpy) is imported until one of these
names is used; :func:`train` and :func:`fit` import the trainer (``training.api``) only when
called.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs more than this module
if TYPE_CHECKING:
    from typing import Any

    from napari_gravity.core.config import GravityConfig
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.evaluation.froc import froc_curve

__version__ = "0.1.0"

#: Models shipped inside the package (``"default"`` is ``"default_mc"``).
BUNDLED_MODELS = ("default", "default_mc", "default_ma")

_LAZY = {
    "GravityConfig": "napari_gravity.core.config",
    "Predictor": "napari_gravity.core.predictor",
    "froc_curve": "napari_gravity.evaluation.froc",
}

__all__ = [
    "BUNDLED_MODELS",
    "GravityConfig",
    "Predictor",
    "__version__",
    "fit",
    "froc_curve",
    "load_predictor",
    "train",
]


def load_predictor(
    model: str | _os.PathLike[str] = "default", device: str = "auto", **kwargs: Any
) -> Predictor:
    """A :class:`~napari_gravity.core.predictor.Predictor` for a model.

    ``model``: ``"default"`` (= ``"default_mc"``, microcalcifications), ``"default_mc"``,
    ``"default_ma"`` (microaneurysms), a registered model ``NAME`` / ``NAME:vN`` (see
    :mod:`napari_gravity.core.registry`) or the path of a ``.safetensors`` model file.
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...; other keyword
    arguments go to the ``Predictor`` (``floor``, ``amp``, ``cache_size``, ``tta``). The model
    file's calibrated threshold becomes the predictor's default γ. ``tta`` defaults to
    ``"auto"`` here: 8 flipped / rotated views averaged (with their own calibrated γ) on images
    up to 2.5 megapixels when the model file is calibrated for it, one pass otherwise; pass
    ``tta="off"`` for one pass everywhere, ``tta_whole="flips"`` to average the 4 flips on larger
    images too (whole mammograms: +6 to +18 AUFROC points on real films at about 3× the time,
    ``benchmarks/whole_tta.py``).

    Raises ``ValueError`` (a ``RegistryError``) naming the choices for an unknown model, and
    ``ModelFileError`` for a file that is not a usable model.
    """
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import RegistryError, models_dir, resolve_model

    try:
        path = resolve_model(model)
    except RegistryError as exc:
        raise RegistryError(
            f"load_predictor: unknown model {_os.fspath(model)!r}; use one of "
            f"{', '.join(map(repr, BUNDLED_MODELS))}, a model registered in {models_dir()} "
            f"(NAME or NAME:vN) or the path of a .safetensors model file ({exc})"
        ) from None
    kwargs.setdefault("tta", "auto")
    return Predictor.from_file(path, device=device, **kwargs)


def _training_api(caller: str):
    try:
        return _importlib.import_module("training.api")
    except ImportError as exc:
        raise ImportError(
            f"napari_gravity.{caller} needs the trainer (the 'training' package, module "
            f"training.api), which could not be imported: {exc}. It ships with napari-gravity; "
            "install the package with its trainer (e.g. `pip install -e .` in the source "
            "checkout) or run from the checkout."
        ) from exc


def train(*args: Any, **kwargs: Any) -> Any:
    """Train a GravityNet from a configuration: forwards to ``training.api.train(config, *,
    overrides=None, progress=True)`` (``config``: a YAML path, a dict or a typed training
    config). Imports the trainer only when called."""
    return _training_api("train").train(*args, **kwargs)


def fit(*args: Any, **kwargs: Any) -> Any:
    """Train on in-memory arrays: forwards to ``training.api.fit(images, points, *, task="mc",
    out=..., epochs=..., **overrides)``. Imports the trainer only when called."""
    return _training_api("fit").fit(*args, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    public = {k for k in globals() if not k.startswith("_")} - {"TYPE_CHECKING", "annotations"}
    return sorted(public | set(__all__) | {"__version__"})
