"""The Qt-free GravityNet core: gravity points, configuration, model, loss, post-processing,
prediction and model files. Never imports napari, Qt or ``training``."""

from .config import GravityConfig
from .gravity_points import gravity_points, n_gravity_points
from .loss import GravityLoss
from .model import GravityNet
from .model_io import LoadedModel, ModelFileError, load_model, read_model_metadata, save_model
from .normalize import normalize_image
from .postprocess import decode, nms_points, postprocess
from .predictor import Predictor, RawOutput

__all__ = [
    "GravityConfig",
    "GravityLoss",
    "GravityNet",
    "LoadedModel",
    "ModelFileError",
    "Predictor",
    "RawOutput",
    "decode",
    "gravity_points",
    "load_model",
    "n_gravity_points",
    "nms_points",
    "normalize_image",
    "postprocess",
    "read_model_metadata",
    "save_model",
]
