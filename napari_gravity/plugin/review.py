"""Review state of one image's detections: features, statuses, colours, undo, merging.

Everything here works on plain numpy arrays and pandas frames (no Qt), so it is
testable without a display. The widgets keep the truth in a napari Points layer
whose ``features`` hold the columns of :data:`FEATURE_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_gravity.core.geometry import near_points

FEATURE_COLUMNS = ("score", "source", "status")
SOURCES = ("model", "user")
STATUSES = ("pending", "accepted", "rejected", "added")
#: statuses that make a point a lesion (architecture.md: rejected / pending are not)
LESION_STATUSES = ("accepted", "added")
USER_DEFAULTS = {"score": 1.0, "source": "user", "status": "added"}


def make_features(scores, source: str | list[str] = "model", status="pending") -> pd.DataFrame:
    """A features frame for ``len(scores)`` points."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    n = len(scores)
    src = [source] * n if isinstance(source, str) else list(source)
    sts = [status] * n if isinstance(status, str) else list(status)
    return pd.DataFrame(
        {
            "score": pd.Series(scores, dtype=float),
            "source": pd.Series(src, dtype=object),
            "status": pd.Series(sts, dtype=object),
        }
    )


def clean_features(features: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """Coerce any frame (e.g. from a CSV or napari) to our three columns, ``n`` rows."""
    if (
        features is not None
        and len(features) == n
        and list(features.columns) == list(FEATURE_COLUMNS)
        and features["score"].dtype == float
        and features["source"].dtype == object
        and features["status"].dtype == object
    ):
        return features  # already clean (the common case inside the plugin)
    if features is None or len(features) != n:
        features = pd.DataFrame(index=range(n))
    features = features.reset_index(drop=True)
    out = pd.DataFrame(index=range(n))
    score = pd.to_numeric(features.get("score", pd.Series([np.nan] * n)), errors="coerce")
    source = features.get("source", pd.Series(["model"] * n)).astype(object)
    status = features.get("status", pd.Series(["pending"] * n)).astype(object)
    source = source.where(source.isin(SOURCES), "model")
    status = status.where(status.isin(STATUSES), "pending")
    out["score"] = pd.Series(score.fillna(1.0).to_numpy(dtype=float), dtype=float)
    out["source"] = pd.Series(source.to_numpy(dtype=object), dtype=object)
    out["status"] = pd.Series(status.to_numpy(dtype=object), dtype=object)
    return out


def status_counts(features: pd.DataFrame) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    if len(features):
        for s, c in features["status"].value_counts().items():
            counts[str(s)] = int(c)
    return counts


def image_review_status(features: pd.DataFrame, touched: bool) -> str:
    """``unreviewed`` / ``in_progress`` / ``done`` (no pending point left after review)."""
    if not touched:
        return "unreviewed"
    counts = status_counts(features)
    return "in_progress" if counts["pending"] else "done"


def lesion_mask(features: pd.DataFrame) -> np.ndarray:
    """Rows that are lesions: accepted or added."""
    if len(features) == 0:
        return np.zeros(0, dtype=bool)
    return features["status"].isin(LESION_STATUSES).to_numpy()


def uncertainty(features: pd.DataFrame) -> float:
    """How much review an image still needs: sum of 1-|2s-1| over pending model points."""
    if len(features) == 0:
        return 0.0
    pend = (features["status"] == "pending").to_numpy()
    s = features["score"].to_numpy(dtype=float)[pend]
    return float(np.sum(1.0 - np.abs(2.0 * s - 1.0)))


def merge_detections(
    points: np.ndarray,
    features: pd.DataFrame,
    new_points: np.ndarray,
    new_scores: np.ndarray,
    dedupe_radius: float,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Replace the pending model points by ``new_points``, keeping every reviewed point.

    Reviewed points (any status but ``pending``, or source ``user``) are kept as they
    are; a new model point closer than ``dedupe_radius`` to a kept point is dropped
    (it is the same candidate the user already judged).
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    new_points = np.asarray(new_points, dtype=float).reshape(-1, 2)
    new_scores = np.asarray(new_scores, dtype=float).reshape(-1)
    features = clean_features(features, len(points))
    keep = (features["status"] != "pending").to_numpy() | (features["source"] == "user").to_numpy()
    kept_pts = points[keep]
    kept_feat = features[keep].reset_index(drop=True)
    fresh = ~near_points(new_points, kept_pts, dedupe_radius)
    new_points, new_scores = new_points[fresh], new_scores[fresh]
    out_pts = np.concatenate([kept_pts, new_points], axis=0)
    out_feat = pd.concat([kept_feat, make_features(new_scores)], ignore_index=True)
    return out_pts, clean_features(out_feat, len(out_pts))


def new_points(points, others, radius: float) -> np.ndarray:
    """The ``points`` that are not duplicates of ``others`` (none closer than ``radius``)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    return points[~near_points(points, others, radius)]


def next_pending(features: pd.DataFrame, after: int | None, order: str = "score") -> int | None:
    """Index of the next pending point after ``after`` (highest score first, wrapping)."""
    if len(features) == 0:
        return None
    pending = np.flatnonzero((features["status"] == "pending").to_numpy())
    if len(pending) == 0:
        return None
    if order == "score":
        s = features["score"].to_numpy(dtype=float)[pending]
        pending = pending[np.argsort(-s, kind="stable")]
    if after is None or after not in pending:
        return int(pending[0])
    pos = int(np.flatnonzero(pending == after)[0])
    return int(pending[(pos + 1) % len(pending)])


@dataclass
class Snapshot:
    """The state of a Points layer before one user action."""

    data: np.ndarray
    features: pd.DataFrame
    label: str


class UndoStack:
    """A bounded stack of :class:`Snapshot` (status changes and layer edits alike)."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._items: list[Snapshot] = []

    def push(self, data: np.ndarray, features: pd.DataFrame, label: str) -> None:
        self._items.append(Snapshot(np.array(data, copy=True), features.copy(), label))
        if len(self._items) > self.limit:
            del self._items[0]

    def pop(self) -> Snapshot | None:
        return self._items.pop() if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_label(self) -> str | None:
        return self._items[-1].label if self._items else None
