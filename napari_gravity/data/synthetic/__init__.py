"""Synthetic and semi-real generators, data set writers and benchmark recipes."""

from .benchmark import RECIPES, get_recipe, load_benchmark, make_benchmark
from .mammogram import synth_mammogram
from .semireal import semireal_mammogram
from .writers import write_eophtha, write_folder, write_inbreast, write_samples

__all__ = [
    "RECIPES",
    "get_recipe",
    "load_benchmark",
    "make_benchmark",
    "semireal_mammogram",
    "synth_mammogram",
    "write_eophtha",
    "write_folder",
    "write_inbreast",
    "write_samples",
]
