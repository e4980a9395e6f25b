"""Inference post-processing (paper 000, section 3.4 and fig. 4).

``decode`` moves every gravity point by its predicted offset (``point + d_h · offset``).
``nms_points`` is greedy non-maximum suppression with an L×L box around every candidate: boxes
whose IoU exceeds ``iou`` are merged, keeping the highest score (the paper's fig. 4).
``postprocess`` = drop points outside the image → threshold γ → NMS → tissue-mask filter.

Exactness of caching. Greedy NMS lets a candidate be suppressed only by higher-scoring ones, so
whether a candidate with score s survives depends only on the candidates scoring above s. Hence,
for every γ ≥ floor, "NMS over all candidates, then threshold γ", "NMS over candidates ≥ floor,
then threshold γ" and "threshold γ, then NMS" give the same detections. The ``Predictor`` runs NMS
once over the candidates above a small floor score and answers every γ ≥ floor by masking the
cached kept set (a γ below the floor re-runs NMS with floor = γ).

Speed. Two equal L×L boxes whose centres differ by (dy, dx) have IoU > t only if
``|dy|, |dx| < r = L(1−t)/(1+t)`` (L/3 for t = 0.5). Candidates are bucketed in a grid of cells
of side ≥ r; only pairs in neighbouring cells are compared, and the greedy order is resolved in
a few vectorised rounds (a candidate is kept when none of its higher-scoring neighbours is kept).
No Python loop runs over candidates: 299,520 candidates take a few tens of ms on a 2-core CPU.
The exact same function runs with torch tensors on a GPU (``nms_points_torch``).
"""

from __future__ import annotations

import numpy as np

from ..types import Detections
from .geometry import inside_image, inside_mask  # one pixel rule (re-exported here)

_MAX_CELLS = 1 << 22
_MAX_PAIRS = 50_000_000


def decode(gp, offsets, d_h: float):
    """Predicted positions ``gp + d_h · offsets`` (numpy arrays or torch tensors; (N,2) or (B,N,2))."""
    return gp + offsets * float(d_h)


def suppression_radius(box: float, iou: float) -> float:
    """Largest per-axis centre distance (exclusive) at which two L×L boxes can have IoU > iou."""
    return float(box) * (1.0 - iou) / (1.0 + iou)


def _box_iou_same_size(dy: np.ndarray, dx: np.ndarray, box: float) -> np.ndarray:
    wy = np.clip(box - np.abs(dy), 0.0, None)
    wx = np.clip(box - np.abs(dx), 0.0, None)
    inter = wy * wx
    return inter / (2.0 * box * box - inter)


def _candidate_pairs(points: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), each unordered pair once, of points in the same or a neighbouring
    grid cell of side ≥ r."""
    lo = np.array([points[:, 0].min(), points[:, 1].min()], dtype=points.dtype)
    extent = np.array([points[:, 0].max(), points[:, 1].max()]) - lo
    cell = max(r, 1e-6)
    # keep the lookup table bounded: grow cells when the image is huge relative to r
    while (extent[0] / cell + 3) * (extent[1] / cell + 3) > _MAX_CELLS:
        cell *= 2.0
    ny = int(extent[0] / cell) + 3
    nx = int(extent[1] / cell) + 3
    cyx = ((points - lo) * (1.0 / cell)).astype(np.int32)  # ≥ 0, so truncation = floor
    key = cyx[:, 0] * np.int32(nx) + cyx[:, 1] + np.int32(nx + 1)
    counts = np.bincount(key, minlength=ny * nx).astype(np.int32)
    starts = np.cumsum(counts, dtype=np.int32) - counts
    order = np.argsort(key, kind="stable").astype(np.int32)
    # Work in sorted order: the table look-ups below then walk memory almost sequentially.
    skey = key[order]
    pos = np.arange(len(skey), dtype=np.int32)
    ii_all, jj_all = [], []
    for oy, ox in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):
        if oy == 0 and ox == 0:
            # same cell: pair sorted position p with the later positions of its run
            c = starts[skey] + counts[skey] - pos - 1
            s = pos + 1
        else:
            nk = skey + np.int32(oy * nx + ox)
            c = counts[nk]
            s = starts[nk]
        src = np.flatnonzero(c > 0).astype(np.int32)
        if src.size == 0:
            continue
        c = c[src]
        s = s[src]
        # fast path: exactly one partner (the common case)
        one = c == 1
        ii_all.append(order[src[one]])
        jj_all.append(order[s[one]])
        multi = ~one
        src, c, s = src[multi], c[multi], s[multi]
        if src.size == 0:
            continue
        total = int(c.sum(dtype=np.int64))
        if total > _MAX_PAIRS:
            raise MemoryError("too many NMS candidate pairs")
        ii = np.repeat(order[src], c)
        # position inside the run = arange(total) - run start
        run_start = np.repeat(np.cumsum(c, dtype=np.int64) - c, c)
        jj = order[np.repeat(s, c) + (np.arange(total) - run_start)]
        ii_all.append(ii)
        jj_all.append(jj)
    if not ii_all:
        e = np.zeros(0, dtype=np.int32)
        return e, e
    return np.concatenate(ii_all), np.concatenate(jj_all)


def _resolve_greedy(n: int, beater: np.ndarray, loser: np.ndarray) -> np.ndarray:
    """Greedy NMS outcome on a dominance DAG: kept(j) ⇔ no kept beater of j. Returns bool (n,)."""
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, 2 suppressed
    has_beater = np.zeros(n, dtype=bool)
    has_beater[loser] = True
    state[~has_beater] = 1
    while beater.size:
        sb = state[beater]
        # losers of a kept beater are suppressed
        state[loser[sb == 1]] = 2
        # drop pairs whose loser is decided, or whose beater is suppressed
        sl = state[loser]
        live = (sl == 0) & (state[beater] != 2)
        beater, loser = beater[live], loser[live]
        # an undecided point with no live beater left is kept
        blocked = np.zeros(n, dtype=bool)
        blocked[loser] = True
        newly = (state == 0) & ~blocked
        if not newly.any() and beater.size:
            # cannot happen on a DAG; guard against an infinite loop
            raise RuntimeError("NMS resolution did not progress")
        state[newly] = 1
    state[state == 0] = 1
    return state == 1


def nms_keep(points, scores, box: float, iou: float = 0.5) -> np.ndarray:
    """Greedy NMS with L×L boxes (L = ``box``) as a bool mask of kept points (input order).

    Ties in score are broken by index (lower index wins), like a stable sort.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    sc = np.asarray(scores).reshape(-1)
    n = len(sc)
    r = suppression_radius(box, iou)
    if r <= 0 or n <= 1:
        return np.ones(n, dtype=bool)
    try:
        ii, jj = _candidate_pairs(pts, r)
    except MemoryError:
        keep = np.zeros(n, dtype=bool)
        keep[nms_points_torchvision(pts, sc, box, iou)] = True
        return keep
    if ii.size == 0:
        return np.ones(n, dtype=bool)
    # equal L×L boxes: IoU > t  ⇔  inter · (1 + t) > 2 t L²  (inter = overlap area)
    py, px = np.ascontiguousarray(pts[:, 0]), np.ascontiguousarray(pts[:, 1])
    L = np.float32(box)
    wy = L - np.abs(py.take(ii) - py.take(jj))
    wx = L - np.abs(px.take(ii) - px.take(jj))
    np.maximum(wy, 0, out=wy)
    np.maximum(wx, 0, out=wx)
    wy *= wx
    ok = wy * np.float32(1.0 + iou) > np.float32(2.0 * iou * box * box)
    ii, jj = ii[ok], jj[ok]
    si, sj = sc[ii], sc[jj]
    i_wins = (si > sj) | ((si == sj) & (ii < jj))
    beater = np.where(i_wins, ii, jj)
    loser = np.where(i_wins, jj, ii)
    return _resolve_greedy(n, beater, loser)


def nms_points(points, scores, box: float, iou: float = 0.5) -> np.ndarray:
    """Greedy NMS of points with L×L boxes (L = ``box``): indices of kept points, best first."""
    sc = np.asarray(scores).reshape(-1)
    kept = np.flatnonzero(nms_keep(points, sc, box, iou))
    return kept[np.argsort(-sc[kept], kind="stable")]


def nms_points_torchvision(points, scores, box: float, iou: float = 0.5) -> np.ndarray:
    """Reference/fallback: ``torchvision.ops.nms`` on L×L boxes (O(N²) on CPU for dense sets)."""
    import torch
    from torchvision.ops import nms

    p = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    h = float(box) / 2.0
    boxes = torch.stack([p[:, 1] - h, p[:, 0] - h, p[:, 1] + h, p[:, 0] + h], dim=1)
    return nms(boxes, s, float(iou)).numpy().astype(np.int64)


def nms_keep_torch(points, scores, box: float, iou: float = 0.5, valid=None, extent=None):
    """The grid NMS with torch tensors (any device; built for CUDA): bool mask of kept points.

    Same algorithm and result as :func:`nms_keep`, written for few kernel launches and few
    host-device synchronisations (the number of candidate pairs, the number of true pairs, and
    one per resolution round). ``valid`` (bool, optional) marks the candidates (the others take no
    part and are not kept); ``extent`` (H, W) — when every valid point lies in
    [-0.5, H) × [-0.5, W) — saves the synchronisation of a min/max.
    """
    import torch

    pts = points.reshape(-1, 2).to(torch.float32)
    sc = scores.reshape(-1)
    dev = pts.device
    n = sc.numel()
    if valid is None:
        valid = torch.ones(n, dtype=torch.bool, device=dev)
    if n == 0:
        return valid.clone()
    r = suppression_radius(box, iou)
    if extent is None:
        inf = float("inf")
        lo_t = torch.where(valid[:, None], pts, inf).amin(0)
        hi_t = torch.where(valid[:, None], pts, -inf).amax(0)
        lo_y, lo_x, hi_y, hi_x = torch.cat([lo_t, hi_t]).tolist()
        if not np.isfinite(lo_y):
            return valid.clone()
    else:
        lo_y = lo_x = -0.5
        hi_y, hi_x = float(extent[0]), float(extent[1])
    cell = max(r, 1e-6)
    while ((hi_y - lo_y) / cell + 3) * ((hi_x - lo_x) / cell + 3) > _MAX_CELLS:
        cell *= 2.0
    ny = int((hi_y - lo_y) / cell) + 3
    nx = int((hi_x - lo_x) / cell) + 3
    inv = 1.0 / cell
    cy = ((pts[:, 0] - lo_y) * inv).long().clamp_(0, ny - 3)
    cx = ((pts[:, 1] - lo_x) * inv).long().clamp_(0, nx - 3)
    sentinel = ny * nx  # invalid points: a cell of their own, with a count forced to 0
    key = torch.where(valid, (cy + 1) * nx + cx + 1, sentinel)
    # cell counts from the sorted keys (torch.bincount would synchronise on CUDA)
    skey, order = torch.sort(key, stable=True)
    edges = torch.searchsorted(skey, torch.arange(sentinel + nx + 3, device=dev))
    starts = edges[:-1]
    counts = edges[1:] - starts
    counts[sentinel] = 0
    # the same cell and four forward neighbours: (0,0), (0,1), (1,-1), (1,0), (1,1)
    a = torch.arange(5, device=dev)
    nk = (key[None, :] + (a + (a >= 2) * (nx - 3))[:, None]).reshape(-1)
    c = counts[nk]
    total = int(c.sum())  # sync
    rep = torch.repeat_interleave(torch.arange(5 * n, device=dev), c, output_size=total)
    first = (torch.cumsum(c, 0) - c)[rep]
    jj = order[starts[nk][rep] + torch.arange(total, device=dev) - first]
    ii = rep % n
    w = (box - (pts[ii] - pts[jj]).abs()).clamp_(min=0)
    ok = (w[:, 0] * w[:, 1]) * (1.0 + iou) > 2.0 * iou * box * box
    ok &= (rep >= n) | (ii < jj)  # same cell: each unordered pair once, never (i, i)
    sel = torch.nonzero(ok).flatten()  # sync
    ii, jj = ii[sel], jj[sel]
    si, sj = sc[ii], sc[jj]
    i_wins = (si > sj) | ((si == sj) & (ii < jj))
    beater = torch.where(i_wins, ii, jj)
    loser = torch.where(i_wins, jj, ii)
    # state: 0 undecided, 1 kept, 2 suppressed (scatter-max: no synchronisation)
    zero = torch.zeros(n, dtype=torch.int32, device=dev)
    has_beater = zero.scatter_reduce(0, loser, torch.ones_like(loser, dtype=torch.int32), "amax")
    state = 1 - has_beater  # int32: 1 kept, 0 undecided
    while bool((state[loser] == 0).any()):  # sync per round
        # losers of a kept beater are suppressed
        hit = zero.scatter_reduce(0, loser, (state[beater] == 1).int(), "amax")
        state = torch.where(hit > 0, 2, state)
        # an undecided point whose beaters are all suppressed is kept
        blocked = zero.scatter_reduce(0, loser, (state[beater] != 2).int(), "amax")
        state = torch.where((state == 0) & (blocked == 0), 1, state)
    return (state == 1) & valid


def nms_points_torch(points, scores, box: float, iou: float = 0.5):
    """:func:`nms_keep_torch` as indices of kept points, best first (a LongTensor)."""
    import torch

    sc = scores.reshape(-1)
    kept = torch.nonzero(nms_keep_torch(points, sc, box, iou)).flatten()
    return kept[torch.argsort(-sc[kept], stable=True)]


def postprocess(
    points,
    scores,
    threshold: float,
    box: float,
    iou: float = 0.5,
    mask: np.ndarray | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Detections:
    """Decoded candidates → detections: drop points outside the image (when ``image_shape`` is
    given), keep scores ≥ ``threshold``, NMS with L×L boxes, drop points outside ``mask``.
    Detections come sorted by decreasing score."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    sel = sc >= threshold
    if image_shape is not None:
        sel &= inside_image(pts, image_shape)
    idx = np.flatnonzero(sel)
    kept = idx[nms_points(pts[idx], sc[idx], box, iou)]
    if mask is not None and kept.size:
        kept = kept[inside_mask(pts[kept], mask)]
    return Detections(points=pts[kept], scores=sc[kept])
