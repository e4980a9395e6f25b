"""Bootstrap over images for FROC statistics (paper 000, section 4.5).

Images are resampled with replacement (same number as the set). Matching never depends on the
other images, so each prediction's outcome (TP or FP) is computed once by
:func:`~napari_gravity.evaluation.froc.froc_curve`; a resample only changes how many times each
image counts. A resample is then an integer weight per image (``np.bincount`` of the drawn
indices) and its curve comes from weighted cumulative sums over the globally score-sorted
predictions — no re-matching.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_gravity.evaluation.froc import (
    DEFAULT_SENSITIVITY_FPPI,
    EvaluationError,
    FROCResult,
    curve_value,
    partial_area,
)

_CELL_BUDGET = 4_000_000  # resamples x predictions handled at once


def resample_weights(n_images: int, n_resamples: int = 1000, seed: int | None = 0) -> np.ndarray:
    """(n_resamples, n_images) int32 counts: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(n_resamples, n_images))
    flat = idx + (np.arange(n_resamples)[:, None] * n_images)
    return (
        np.bincount(flat.ravel(), minlength=n_resamples * n_images)
        .reshape(n_resamples, n_images)
        .astype(np.int32)
    )


def default_grid(max_fppi: float, extra: Iterable[float] = ()) -> np.ndarray:
    """Common FPpI grid: linear and logarithmic points in [0, max_fppi] plus ``extra``."""
    g = float(max_fppi)
    pts = np.r_[0.0, np.linspace(0, g, 101), np.geomspace(min(0.01, g / 10), g, 100)]
    pts = np.r_[pts, [float(v) for v in extra if 0 <= float(v) <= g]]
    return np.unique(pts)


@dataclass
class _Prepared:
    order_img: np.ndarray  # image index of each counted prediction, score-sorted
    order_tp: np.ndarray  # bool
    ends: np.ndarray  # last index of every tie group
    thresholds: np.ndarray
    lesions: np.ndarray  # per image
    fp_image: np.ndarray  # per image (bool)


def _prepare(result: FROCResult) -> _Prepared:
    order = np.argsort(-result.pred_score, kind="stable")
    s = result.pred_score[order]
    ends = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1] if len(s) else np.zeros(0, int)
    return _Prepared(
        order_img=result.pred_image[order],
        order_tp=result.pred_tp[order],
        ends=ends,
        thresholds=s[ends],
        lesions=result.lesions_per_image.astype(np.float64),
        fp_image=result.fp_image.astype(np.float64),
    )


def _truncate(prep: _Prepared, result: FROCResult, need: float) -> _Prepared | None:
    """Score-sorted prefix long enough for most resamples to pass FPpI ``need``.

    Points beyond the first one past ``need`` do not change the area or the grid values, so a
    resample is evaluated on the prefix and redone on the full set only if its curve stopped
    at or below ``need``. Returns None when the prefix would be (nearly) everything.
    """
    if not len(prep.ends):
        return None
    fp_cum = np.cumsum(~prep.order_tp)[prep.ends]
    target = 3.0 * need * max(1, result.n_fp_images) + 50
    g = int(np.searchsorted(fp_cum, target, side="left"))
    if g >= len(prep.ends) - 1 or prep.ends[g] > 0.7 * len(prep.order_img):
        return None
    last = int(prep.ends[g]) + 1
    return _Prepared(
        order_img=prep.order_img[:last],
        order_tp=prep.order_tp[:last],
        ends=prep.ends[: g + 1],
        thresholds=prep.thresholds[: g + 1],
        lesions=prep.lesions,
        fp_image=prep.fp_image,
    )


def _curves(prep: _Prepared, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC curves (fppi, tpr) for a batch of weight rows; also returns validity per row."""
    wp = w[:, prep.order_img]  # (b, P) weight of each prediction
    allc = np.cumsum(wp, axis=1, dtype=np.int32)[:, prep.ends]
    wp *= prep.order_tp[None, :]
    tp = np.cumsum(wp, axis=1, dtype=np.int32)[:, prep.ends]
    fp = allc - tp
    n_les = w @ prep.lesions
    n_img = w @ prep.fp_image
    ok = (n_les > 0) & (n_img > 0)
    les = np.where(ok, n_les, 1.0)[:, None]
    img = np.where(ok, n_img, 1.0)[:, None]
    zeros = np.zeros((len(w), 1))
    x = np.concatenate([zeros, fp / img], axis=1)
    y = np.concatenate([zeros, tp / les], axis=1)
    return x, y, ok


@dataclass
class BootstrapResult:
    """Bootstrap distribution of a FROC curve.

    ``aufroc``: one value per resample (NaN for a resample without lesions or without
    FP-counting images); ``grid``: common FPpI grid; ``tpr_mean/lo/hi``: mean curve and
    percentile band along TPR; ``sens``: {fppi: per-resample TPR}.
    """

    n_resamples: int
    seed: int | None
    max_fppi: float
    ci: float
    aufroc: np.ndarray
    grid: np.ndarray
    tpr_mean: np.ndarray
    tpr_lo: np.ndarray
    tpr_hi: np.ndarray
    sens: dict[float, np.ndarray] = field(default_factory=dict)
    n_invalid: int = 0

    def _q(self, a: np.ndarray) -> tuple[float, float]:
        a = a[np.isfinite(a)]
        if not len(a):
            return float("nan"), float("nan")
        lo, hi = np.percentile(a, [50 * (1 - self.ci), 100 - 50 * (1 - self.ci)])
        return float(lo), float(hi)

    @property
    def aufroc_ci(self) -> tuple[float, float]:
        return self._q(self.aufroc)

    @property
    def aufroc_mean(self) -> float:
        return float(np.nanmean(self.aufroc))

    @property
    def aufroc_std(self) -> float:
        return float(np.nanstd(self.aufroc))

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.aufroc_ci
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "ci": self.ci,
            "max_fppi": self.max_fppi,
            "n_invalid": self.n_invalid,
            "aufroc_mean": self.aufroc_mean,
            "aufroc_std": self.aufroc_std,
            "aufroc_ci": [lo, hi],
            "sensitivity_at": {
                _key(f): {
                    "mean": float(np.nanmean(v)),
                    "ci": list(self._q(v)),
                }
                for f, v in self.sens.items()
            },
            "grid_fppi": self.grid.tolist(),
            "tpr_mean": self.tpr_mean.tolist(),
            "tpr_lo": self.tpr_lo.tolist(),
            "tpr_hi": self.tpr_hi.tolist(),
        }


def _key(f: float) -> str:
    return f"{float(f):g}"


def bootstrap_froc(
    result: FROCResult,
    n_resamples: int = 1000,
    seed: int | None = 0,
    *,
    max_fppi: float = 10.0,
    sensitivity_fppi: Sequence[float] = DEFAULT_SENSITIVITY_FPPI,
    ci: float = 0.95,
    grid: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> BootstrapResult:
    """Bootstrap the FROC curve of ``result`` over its images.

    ``weights`` (optional, (B, n_images) counts) overrides the seeded resampling (used to pair
    two methods on the same resamples).
    """
    if weights is None:
        if n_resamples < 1:
            raise EvaluationError(f"n_resamples must be >= 1, got {n_resamples}")
        weights = resample_weights(result.n_images, n_resamples, seed)
    weights = np.asarray(weights, dtype=np.int32)
    if weights.ndim != 2 or weights.shape[1] != result.n_images:
        raise EvaluationError(
            f"weights must have shape (resamples, {result.n_images}), got {weights.shape}"
        )
    sens_at = [float(v) for v in sensitivity_fppi]
    grid = default_grid(max_fppi, sens_at) if grid is None else np.asarray(grid, np.float64)
    prep = _prepare(result)
    need = max([float(max_fppi), float(np.max(grid, initial=0.0)), *sens_at])
    short = _truncate(prep, result, need)
    n_b = len(weights)
    auf = np.full(n_b, np.nan)
    tgrid = np.full((n_b, len(grid)), np.nan)
    sens = np.full((n_b, len(sens_at)), np.nan)

    def run(p: _Prepared, rows: np.ndarray, check: bool) -> np.ndarray:
        """Evaluate ``rows``; with ``check``, return the rows whose curve stopped too early."""
        redo = []
        batch = max(1, _CELL_BUDGET // max(1, len(p.order_img)))
        for start in range(0, len(rows), batch):
            idx = rows[start : start + batch]
            x, y, ok = _curves(p, weights[idx])
            if check:
                bad = ok & (x[:, -1] <= need)
                redo.append(idx[bad])
                ok &= ~bad
            auf[idx] = np.where(ok, partial_area(x, y, max_fppi), np.nan)
            for j in np.nonzero(ok)[0]:
                tgrid[idx[j]] = curve_value(x[j], y[j], grid)
                if sens_at:
                    sens[idx[j]] = curve_value(x[j], y[j], sens_at)
        return np.concatenate(redo) if redo else np.zeros(0, dtype=np.int64)

    all_rows = np.arange(n_b)
    if short is not None:
        redo = run(short, all_rows, check=True)
        if len(redo):
            run(prep, redo, check=False)
    else:
        run(prep, all_rows, check=False)
    lo_q, hi_q = 50 * (1 - ci), 100 - 50 * (1 - ci)
    valid = np.isfinite(auf)
    if valid.any():
        tv = tgrid[valid]
        mean = tv.mean(axis=0)
        lo, hi = np.percentile(tv, [lo_q, hi_q], axis=0)
    else:
        mean = lo = hi = np.full(len(grid), np.nan)
    return BootstrapResult(
        n_resamples=n_b,
        seed=seed,
        max_fppi=float(max_fppi),
        ci=float(ci),
        aufroc=auf,
        grid=grid,
        tpr_mean=mean,
        tpr_lo=lo,
        tpr_hi=hi,
        sens={f: sens[:, k] for k, f in enumerate(sens_at)},
        n_invalid=int((~valid).sum()),
    )


@dataclass
class PairedComparison:
    """ΔAUFROC = A − B on the same resamples; ``p`` = fraction of resamples with Δ <= 0."""

    a: BootstrapResult
    b: BootstrapResult
    delta: np.ndarray
    observed_delta: float

    @property
    def p_value(self) -> float:
        d = self.delta[np.isfinite(self.delta)]
        return float(np.mean(d <= 0)) if len(d) else float("nan")

    @property
    def delta_ci(self) -> tuple[float, float]:
        return self.a._q(self.delta)

    def to_dict(self) -> dict[str, Any]:
        d = self.delta[np.isfinite(self.delta)]
        return {
            "delta_aufroc": self.observed_delta,
            "delta_mean": float(d.mean()) if len(d) else float("nan"),
            "delta_ci": list(self.delta_ci),
            "p_value": self.p_value,
            "n_resamples": len(self.delta),
            "seed": self.a.seed,
            "max_fppi": self.a.max_fppi,
        }


def compare_bootstrap(
    result_a: FROCResult,
    result_b: FROCResult,
    n_resamples: int = 1000,
    seed: int | None = 0,
    *,
    max_fppi: float = 10.0,
    sensitivity_fppi: Sequence[float] = DEFAULT_SENSITIVITY_FPPI,
    ci: float = 0.95,
) -> PairedComparison:
    """Paired bootstrap of two methods evaluated on the same images."""
    if set(result_a.image_ids) != set(result_b.image_ids):
        only_a = sorted(set(result_a.image_ids) - set(result_b.image_ids))
        only_b = sorted(set(result_b.image_ids) - set(result_a.image_ids))
        raise EvaluationError(
            "paired comparison needs the same images for both methods; "
            f"only in A: {only_a[:5]}, only in B: {only_b[:5]}"
        )
    if result_a.n_lesions != result_b.n_lesions:
        raise EvaluationError(
            f"the two methods were evaluated against different ground truth "
            f"({result_a.n_lesions} vs {result_b.n_lesions} lesions)"
        )
    w_a = resample_weights(result_a.n_images, n_resamples, seed)
    pos = {iid: k for k, iid in enumerate(result_a.image_ids)}
    w_b = w_a[:, [pos[iid] for iid in result_b.image_ids]]
    kw = {"max_fppi": max_fppi, "sensitivity_fppi": sensitivity_fppi, "ci": ci}
    ba = bootstrap_froc(result_a, seed=seed, weights=w_a, **kw)
    bb = bootstrap_froc(result_b, seed=seed, weights=w_b, **kw)
    observed = result_a.aufroc(max_fppi) - result_b.aufroc(max_fppi)
    return PairedComparison(ba, bb, ba.aufroc - bb.aufroc, float(observed))
