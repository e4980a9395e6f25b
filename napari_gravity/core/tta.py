"""Test-time augmentation (TTA): the network run on flipped / rotated views of an image, its
outputs averaged per gravity point.

The eight views are the dihedral transforms of the image (code ``k``: bit 4 transposes, bit 1
flips the columns, bit 2 the rows, applied in that order). Before the views are made the image
is padded at the bottom and right (edge-reflected, a few pixels) to a *symmetric* size: one for
which every transform maps the gravity-point lattice onto itself. Each gravity point then has
exactly one counterpart in every view, and the views' outputs are averaged point by point —
scores as a mean, moved positions as a score-weighted mean — giving one set of candidates in
the same form as a single pass, so NMS, thresholds and the GUI's cached re-thresholding work on
it unchanged. The network is not equivariant to flips or 90° rotations; averaging over views
removes orientation-specific responses (benchmarks in docs/benchmarks.md).

Modes: ``"off"`` (one pass), ``"flips"`` (4 views: identity, both flips, 180°), ``"d8"`` (all 8).
"""

from __future__ import annotations

import math

import numpy as np

from .gravity_points import window_offsets

MODES = ("off", "flips", "d8")
#: The modes that average views: each is calibrated on its own (``gravity calibrate --tta``).
AVERAGED = MODES[1:]
VIEWS = {"off": (0,), "flips": (0, 1, 2, 3), "d8": tuple(range(8))}
#: Lattice coordinates are matched on a grid of 1/KEY_SCALE px (they are exact multiples of it
#: or well separated: the lattice spacing is at least 1 px).
KEY_SCALE = 8.0


def views(mode: str) -> tuple[int, ...]:
    """The view codes of a TTA mode; ``ValueError`` for an unknown one."""
    if mode not in VIEWS:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {MODES}")
    return VIEWS[mode]


def symmetric_size(n: int, step: float, stride: int, layout: str) -> int:
    """The smallest size ≥ ``n`` along which the gravity-point lattice is mirror-symmetric:
    ``y ↦ size − 1 − y`` maps all its points (those in the stride padding beyond the image
    included) onto themselves."""
    off = window_offsets(step, stride=stride, layout=layout)
    centre = float(off[0] + off[-1])
    if not np.allclose(off + off[::-1], centre):
        raise ValueError("test-time augmentation needs a mirror-symmetric gravity-point window")
    c = round(centre)
    if abs(c - centre) > 1e-6:
        raise ValueError("test-time augmentation needs a window centred on a pixel or a pixel edge")
    # last point (m·K + c) on the last pixel: size = m·K + c + 1 ≥ n
    m = max(0, math.ceil((n - c - 1) / stride))
    return m * stride + c + 1


def pad_symmetric(
    image: np.ndarray, shape: tuple[int, int], mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (and ``mask``) padded at the bottom / right to ``shape``: the image by edge
    reflection (no new structure for the network to respond to), the mask with ``False``."""
    h, w = image.shape
    ph, pw = shape[0] - h, shape[1] - w
    if ph < 0 or pw < 0:
        raise ValueError(f"pad_symmetric: {shape} is smaller than the image {image.shape}")
    if ph == 0 and pw == 0:
        return image, mask
    mode = "symmetric" if ph <= h and pw <= w else "edge"
    out = np.pad(image, ((0, ph), (0, pw)), mode=mode)
    m = None if mask is None else np.pad(np.asarray(mask, bool), ((0, ph), (0, pw)))
    return out, m


def view(a: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` of a 2-D array (transpose if ``k & 4``, then flip columns if ``k & 1``,
    then rows if ``k & 2``), contiguous."""
    if k & 4:
        a = a.T
    if k & 1:
        a = a[:, ::-1]
    if k & 2:
        a = a[::-1, :]
    return np.ascontiguousarray(a)


def unview_points(p: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) points of view ``k`` mapped back to the coordinates of the (H, W) = ``shape``
    array it was made from (the inverse of :func:`view` on coordinates)."""
    q = np.array(p, dtype=np.float64, copy=True).reshape(-1, 2)
    h, w = (shape[1], shape[0]) if k & 4 else (shape[0], shape[1])  # the view's shape
    if k & 2:
        q[:, 0] = h - 1 - q[:, 0]
    if k & 1:
        q[:, 1] = w - 1 - q[:, 1]
    if k & 4:
        q = q[:, ::-1]
    return q


def _keys(p: np.ndarray) -> np.ndarray:
    r = np.rint(np.asarray(p, np.float64) * KEY_SCALE).astype(np.int64)
    return r[:, 0] * (1 << 32) + r[:, 1]


def lattice_index(base_points: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each of ``points``, the index of the equal point in ``base_points`` (to 1/8 px);
    ``ValueError`` if one has none (the views' lattices must coincide)."""
    bk = _keys(base_points)
    order = np.argsort(bk, kind="stable")
    sk = bk[order]
    qk = _keys(points)
    pos = np.clip(np.searchsorted(sk, qk), 0, len(sk) - 1)
    if len(qk) and not np.array_equal(sk[pos], qk):
        raise ValueError("test-time augmentation: a view's gravity points miss the image's lattice")
    return order[pos]


def fuse_views(
    base_gp: np.ndarray,
    outputs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Average the views' outputs per gravity point of the (symmetric-size) image.

    ``outputs``: ``(k, gravity_points, moved_points, scores)`` of each view, in the view's
    coordinates; ``base_gp``: the image's own gravity points (the order of the result).
    Returns ``(points, scores)``: the mean score over the views and the score-weighted mean of
    the moved positions (a plain mean where every view scores 0)."""
    n = len(base_gp)
    s_sum = np.zeros(n, np.float64)
    sp_sum = np.zeros((n, 2), np.float64)
    p_sum = np.zeros((n, 2), np.float64)
    count = np.zeros(n, np.float64)
    for k, gp, moved, scores in outputs:
        idx = lattice_index(base_gp, unview_points(gp, k, shape))
        sc = np.asarray(scores, np.float64)
        pts = unview_points(moved, k, shape)
        # a view's points map one-to-one onto the lattice (a repeat would be counted once
        # and fail the coverage check below)
        count[idx] += 1.0
        s_sum[idx] += sc
        sp_sum[idx] += pts * sc[:, None]
        p_sum[idx] += pts
    if (count != len(outputs)).any():
        raise ValueError("test-time augmentation: the views do not cover the same gravity points")
    scores = s_sum / count
    weighted = s_sum > 0
    points = p_sum / count[:, None]
    points[weighted] = sp_sum[weighted] / s_sum[weighted, None]
    return points.astype(np.float32), scores.astype(np.float32)


#: ``chest_wall_view``: the side must touch the border along this fraction of its length ...
CHEST_WALL_CONTACT = 0.3
#: ... and by this much more than any other side.
CHEST_WALL_MARGIN = 0.15


def chest_wall_view(mask: np.ndarray | None) -> int:
    """The view (:func:`view`) that puts a mammogram's chest wall on the left, as every MC
    training image has it: the image side the breast mask meets along most of its length
    (right → 1, top → 4, bottom → 5). 0 when the left already is that side, or when no side
    clearly is (a tile inside the breast touches all four, a crop may touch none)."""
    if mask is None:
        return 0
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or min(m.shape) < 2:
        return 0
    contact = {
        0: float(m[:, 0].mean()),
        1: float(m[:, -1].mean()),
        4: float(m[0, :].mean()),
        5: float(m[-1, :].mean()),
    }
    order = sorted(contact, key=contact.get, reverse=True)
    best, second = contact[order[0]], contact[order[1]]
    if best < CHEST_WALL_CONTACT or best - second < CHEST_WALL_MARGIN:
        return 0
    return order[0]
