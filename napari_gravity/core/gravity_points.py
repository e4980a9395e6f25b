"""Gravity points: the pixel anchors of GravityNet (paper 000, section 3.1).

A K×K *feature grid* (K = the backbone's output stride, 32 for ResNet ``layer4``) holds a
base configuration of points; the configuration is slid over every cell of the
``ceil(H/K) × ceil(W/K)`` feature map. Coordinates are (y, x) in pixels of the input image,
with pixel ``(i, j)`` at coordinate ``(i, j)`` (pixel centres on integers).

Order (it is the order of the model's outputs): cell-major — feature cells in row-major order
(cell row, then cell column) — then, inside a cell, the base configuration in row-major order
(within-window row, then within-window column).

Layouts:

``"paper"``
    Offsets ``0, step, 2·step, … ≤ K−2`` from the window's upper-left pixel, so
    ``n = floor((K−2)/step) + 1`` points per axis and ``N_GP = n² · H_FM · W_FM`` — the paper's
    counts (its tables and the public reference code). The lattice is not uniform across window
    borders (last point at offset 30, next window's first at 32 for step 10).
``"uniform"``
    The same number of points per window (so the same model head), spread evenly and centred:
    offsets ``(i + 0.5)·K/n − 0.5``. The lattice is uniform over the whole image with spacing
    ``K/n`` (≤ step for the paper's steps 5, 6, 10, 15, 30).
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = ("paper", "uniform")


def points_per_axis(step: float, stride: int = 32) -> int:
    """Points per axis of one feature grid: ``floor((K−2)/step) + 1`` (paper eq. 2)."""
    k = int(stride)
    if not (0 < step <= k - 2):
        raise ValueError(f"step must satisfy 0 < step <= K-2 = {k - 2} for stride {k}, got {step}")
    return math.floor((k - 2) / step) + 1


def window_offsets(step: float, *, stride: int = 32, layout: str = "paper") -> np.ndarray:
    """1-D offsets of the base configuration inside one K-pixel window (length ``n``)."""
    n = points_per_axis(step, stride)
    if layout == "paper":
        return np.arange(n, dtype=np.float64) * float(step)
    if layout == "uniform":
        return (np.arange(n, dtype=np.float64) + 0.5) * (stride / n) - 0.5
    raise ValueError(f"unknown gravity-point layout {layout!r}; choose one of {LAYOUTS}")


def feature_map_shape(image_shape: tuple[int, ...], stride: int = 32) -> tuple[int, int]:
    """``(ceil(H/stride), ceil(W/stride))`` for an image of shape (H, W) (extra leading dims ok)."""
    h, w = int(image_shape[-2]), int(image_shape[-1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image shape must be positive, got {tuple(image_shape)}")
    return math.ceil(h / stride), math.ceil(w / stride)


def base_configuration(step: float, *, stride: int = 32, layout: str = "paper") -> np.ndarray:
    """The (A, 2) (y, x) base configuration of one window, row-major; A = n²."""
    off = window_offsets(step, stride=stride, layout=layout)
    yy, xx = np.meshgrid(off, off, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def gravity_points(
    image_shape: tuple[int, ...], step: float, *, stride: int = 32, layout: str = "paper"
) -> np.ndarray:
    """All gravity points of an image, (N, 2) float64 (y, x), in the model's output order.

    ``image_shape`` is (H, W) (or any shape ending in H, W). Sizes that are not multiples of the
    stride are padded up (ceil), so some points may fall in the padding beyond the image; the
    post-processing drops predictions outside the image.
    """
    hf, wf = feature_map_shape(image_shape, stride)
    base = base_configuration(step, stride=stride, layout=layout)  # (A, 2)
    cy, cx = np.meshgrid(
        np.arange(hf, dtype=np.float64) * stride,
        np.arange(wf, dtype=np.float64) * stride,
        indexing="ij",
    )
    shifts = np.stack([cy.ravel(), cx.ravel()], axis=1)  # (Hf*Wf, 2), row-major over cells
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 2)


def n_gravity_points(image_shape: tuple[int, ...], step: float, *, stride: int = 32) -> int:
    """``N_GP = (floor((K−2)/step)+1)² · ceil(H/K) · ceil(W/K)`` (same for every layout)."""
    hf, wf = feature_map_shape(image_shape, stride)
    return points_per_axis(step, stride) ** 2 * hf * wf
