"""How the plugin draws points: outline-only rings, colour-blind-safe colours, screen-size floor.

Colours come from the Okabe-Ito palette plus white for the ground truth (distinguishable with
protanopia, deuteranopia and tritanopia: every pair stays >= 20 CIELAB ΔE apart under the
simulations below, checked by tests/plugin). The status also changes the symbol where
it matters (ground truth is a square, detections are rings), so colour is never the only cue.
Markers are circle outlines (napari's "disc" with a transparent face; its "ring" glyph fills in
when small), so they never hide the lesion being judged, and their
size has a floor in screen pixels: the session re-sizes them when the camera zooms out (napari's
``canvas_size_limits`` would clamp the glyph but not its border, which then fills it), so they
stay visible, and hollow, when a whole 4000-pixel mammogram fits the window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: colours (hex) per point kind
PALETTE = {
    "gt": "#ffffff",  # white, square outline
    "pending": "#f0e442",  # yellow ring
    "accepted": "#56b4e9",  # sky blue ring
    "rejected": "#d55e00",  # vermillion ring (thinner, half transparent)
    "added": "#cc79a7",  # reddish purple ring
}
#: marker size in data pixels (the ring's diameter) and its floor / ceiling on the screen
POINT_SIZE = 11
MIN_SCREEN_PX = 20
BORDER_WIDTH = 0.15  # relative to the size
SCORE_TEXT = {"string": "{score:.2f}", "size": 9, "color": "#f0f0f0", "anchor": "upper_left"}


def rgba(hex_color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    h = hex_color.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, alpha)


STATUS_RGBA = {s: rgba(PALETTE[s], 0.75 if s == "rejected" else 1.0) for s in PALETTE}


def border_colors(features: pd.DataFrame) -> np.ndarray:
    """Ring colour per point from its review status."""
    if len(features) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.array(
        [STATUS_RGBA.get(s, STATUS_RGBA["pending"]) for s in features["status"]],
        dtype=np.float32,
    )


def screen_size(base: float, zoom: float) -> float:
    """A marker's size in data pixels: ``base``, or more when the view is zoomed out so far that
    it would be smaller than ``MIN_SCREEN_PX`` on the screen."""
    return float(max(base, MIN_SCREEN_PX / max(float(zoom), 1e-6)))


def marker_kwargs() -> dict:
    """Points-layer keywords shared by detections and ground truth."""
    return {
        "size": POINT_SIZE,
        "face_color": "transparent",
        "border_width": BORDER_WIDTH,
        "border_width_is_relative": True,
    }


# --------------------------------------------------------------------------- colour vision

#: Machado, Oliveira & Fernandes (2009) full-severity simulation matrices (linear RGB)
CVD_MATRICES = {
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "tritanopia": np.array(
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ]
    ),
}


def _to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def simulate(hex_color: str, vision: str) -> np.ndarray:
    """sRGB (0-1) of ``hex_color`` as seen with ``vision`` ("normal" or a CVD_MATRICES key)."""
    c = np.array(rgba(hex_color)[:3])
    if vision == "normal":
        return c
    return _to_srgb(CVD_MATRICES[vision] @ _to_linear(c))


def lab(srgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour (0-1)."""
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ _to_linear(np.asarray(srgb, float)) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def min_pair_distance(colors: dict[str, str], vision: str) -> tuple[float, tuple[str, str]]:
    """Smallest CIELAB ΔE (1976) between two of ``colors`` as seen with ``vision``."""
    names = list(colors)
    best = (np.inf, ("", ""))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            la, lb = lab(simulate(colors[a], vision)), lab(simulate(colors[b], vision))
            best = min(best, (float(np.linalg.norm(la - lb)), (a, b)))
    return best
