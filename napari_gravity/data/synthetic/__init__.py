"""Synthetic and semi-real generators, data set writers and benchmark recipes."""

from .benchmark import RECIPES, get_recipe, load_benchmark, make_benchmark
from .fundus import semireal_fundus, synth_fundus
from .mammogram import synth_mammogram
from .semireal import semireal_mammogram
from .writers import write_eophtha, write_folder, write_inbreast, write_samples

__all__ = [
    "RECIPES",
    "get_recipe",
    "load_benchmark",
    "make_benchmark",
    "semi_real_retina",
    "semireal_fundus",
    "semireal_mammogram",
    "synth_fundus",
    "synth_mammogram",
    "write_eophtha",
    "write_folder",
    "write_inbreast",
    "write_samples",
]


def semi_real_retina(seed: int = 0, shape: tuple[int, int] = (512, 512), **kw):
    """Microaneurysms inserted into a window of ``skimage.data.retina()`` (a ``Sample``);
    shorthand for :func:`semireal_fundus` with lesions."""
    kw.setdefault("has_lesions", True)
    return semireal_fundus(shape, seed, **kw)
