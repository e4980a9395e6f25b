"""napari writer: a Points layer -> our CSV (``y,x,radius[,score,source,status]``).

It is napari's default points writer once the plugin is active (see ``_prefs``), so layers that
are not ours go to napari's builtin writer unchanged.

The file is written atomically by the data layer; features are kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _api


def write_points(path: str, data, meta: dict) -> list[str]:
    """Our CSV for the plugin's layers (detections, ground truth, points files we opened);
    napari's own points CSV for any other points layer (this writer is napari's default)."""
    pts = np.asarray(data, dtype=float)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"{path}: expected (N, 2) points, got shape {pts.shape}")
    role = ((meta.get("metadata") or {}).get("gravity") or {}).get("role")
    feats = meta.get("features")
    ours = role in ("detections", "gt") or (
        feats is not None and {"score", "status"} <= set(pd.DataFrame(feats).columns)
    )
    if not ours:
        from napari_builtins.io import napari_write_points

        out = napari_write_points(path, data, meta)
        return [out] if isinstance(out, str) else list(out or [])
    pts = pts[:, -2:]  # (y, x) of the displayed plane
    feats = pd.DataFrame(meta.get("features", {})).reset_index(drop=True)
    if len(feats) != len(pts):
        feats = pd.DataFrame(index=range(len(pts)))
    if "radius" in feats:
        radii = pd.to_numeric(feats["radius"], errors="coerce").to_numpy(float)
    else:
        # the size drawn may be enlarged for a zoomed-out view: use the layer's own size
        base = ((meta.get("metadata") or {}).get("gravity") or {}).get("base_size")
        size = np.asarray(base if base is not None else meta.get("size", 6.0), dtype=float)
        radii = np.broadcast_to(size, (len(pts),)).astype(float) / 2.0
    _api.write_points_csv(path, pts, radii, feats)
    return [path]
