"""Lesion-based FROC analysis as in GravityNet (paper 000, section 4.4).

Matching, per image: predictions are taken in descending score order (ties keep their input
order); each one becomes a true positive (TP) when a not-yet-matched lesion lies within the
criterion distance (the nearest such lesion is taken); a prediction within the distance only of
lesions that are already matched is a *duplicate*; any other prediction is a false positive (FP).
Duplicates are FPs by default (``duplicates="fp"``) or removed (``duplicates="drop"``, what the
paper's public code does). Criterion distance: ``"bbox"`` = the largest side of the lesion's
bounding box, ``max(2·radius, 1)`` px, or a fixed distance in pixels.

Because the matching of a higher-score prefix never depends on lower scores, one matching pass
gives every operating point: the curve has a point at each distinct score (ties enter together),
starting from (0, 0); TPR = TP / lesions, FPpI = FP / images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_gravity.core.geometry import as_points, inside_mask
from napari_gravity.types import Detections, Sample

# per-prediction labels returned by match_image
TP, FP, DUPLICATE, IGNORED = 1, 0, 2, -1

DEFAULT_SENSITIVITY_FPPI: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
_PAIR_BUDGET = 2_000_000  # predictions x lesions evaluated at once


class EvaluationError(ValueError):
    """Inconsistent evaluation input (unknown image, missing radius, no lesions, ...)."""


# --------------------------------------------------------------------------- matching


@dataclass
class ImageMatch:
    """Result of matching one image: a label per prediction, in the input order.

    ``labels``: 1 = TP, 0 = FP, 2 = duplicate, -1 = ignored (outside the tissue mask);
    ``lesion``: index of the matched lesion for TPs, else -1.
    """

    labels: np.ndarray
    lesion: np.ndarray

    @property
    def n_tp(self) -> int:
        return int(np.count_nonzero(self.labels == TP))


def criterion_distances(
    radii: np.ndarray | None, n: int, match: str | float = "bbox"
) -> np.ndarray:
    """Per-lesion match distance: ``max(2·radius, 1)`` for ``"bbox"``, else the fixed value."""
    if isinstance(match, str):
        if match != "bbox":
            try:
                match = float(match)
            except ValueError:
                raise EvaluationError(
                    f"match must be 'bbox' or a distance in pixels, got {match!r}"
                ) from None
    if isinstance(match, str):
        r = np.full(n, np.nan) if radii is None else np.asarray(radii, dtype=np.float64)
        if r.shape != (n,):
            raise EvaluationError(f"{n} lesions but {r.size} radii")
        if n and not np.all(np.isfinite(r)):
            raise EvaluationError(
                "match='bbox' needs a radius for every lesion; give radii or a fixed distance"
            )
        return np.maximum(2.0 * r, 1.0)
    d = float(match)
    if not np.isfinite(d) or d <= 0:
        raise EvaluationError(f"match distance must be a positive number of pixels, got {d}")
    return np.full(n, d)


def match_image(
    points: np.ndarray,
    scores: np.ndarray,
    gt_points: np.ndarray,
    gt_radii: np.ndarray | None = None,
    *,
    match: str | float = "bbox",
    mask: np.ndarray | None = None,
) -> ImageMatch:
    """Match one image's predictions to its lesions (see the module docstring).

    ``points``/``gt_points`` are (N, 2) (y, x) pixels; ``mask`` (optional, bool 2-D) marks the
    tissue: predictions whose pixel (``floor(p + 0.5)``, see :mod:`napari_gravity.core.geometry`)
    is outside it are labelled ignored (-1). NaN points raise :class:`EvaluationError`.
    """
    try:
        p = as_points(np.asarray(points, dtype=np.float64).reshape(-1, 2), name="prediction points")
        g = as_points(np.asarray(gt_points, dtype=np.float64).reshape(-1, 2), name="lesion points")
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise EvaluationError(f"{len(p)} prediction points but {len(s)} scores")
    if not np.all(np.isfinite(s)):
        raise EvaluationError("prediction scores must be finite numbers")
    crit = criterion_distances(gt_radii, len(g), match)
    labels = np.full(len(p), FP, dtype=np.int8)
    lesion = np.full(len(p), -1, dtype=np.int64)
    active = np.ones(len(p), dtype=bool)
    if mask is not None and len(p):
        active = inside_mask(p, mask)
        labels[~active] = IGNORED
    if len(p) == 0 or len(g) == 0:
        return ImageMatch(labels, lesion)

    order = np.argsort(-s, kind="stable")
    order = order[active[order]]
    crit2 = crit**2 * (1 + 1e-12) + 1e-12

    # all (prediction, lesion) pairs within the criterion, computed in chunks
    rows, cols, dist = [], [], []
    chunk = max(1, _PAIR_BUDGET // len(g))
    pa = p[order]
    for start in range(0, len(pa), chunk):
        d2 = ((pa[start : start + chunk, None, :] - g[None, :, :]) ** 2).sum(-1)
        r, c = np.nonzero(d2 <= crit2[None, :])
        rows.append(r + start)
        cols.append(c)
        dist.append(d2[r, c])
    r = np.concatenate(rows)
    if len(r) == 0:
        return ImageMatch(labels, lesion)
    c = np.concatenate(cols)
    d = np.concatenate(dist)
    # by rank (score order), then distance, then lesion index
    o = np.lexsort((c, d, r))
    r, c = r[o], c[o]
    starts = np.r_[0, np.nonzero(np.diff(r))[0] + 1]
    ends = np.r_[starts[1:], len(r)]
    matched = [False] * len(g)
    n_free = len(g)
    c_list = c.tolist()
    res_label = np.full(len(starts), DUPLICATE, dtype=np.int8)
    res_lesion = np.full(len(starts), -1, dtype=np.int64)
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if n_free == 0:
            break  # every lesion taken: the rest are duplicates
        for j in range(a, b):
            lj = c_list[j]
            if not matched[lj]:
                matched[lj] = True
                n_free -= 1
                res_label[k] = TP
                res_lesion[k] = lj
                break
    pred_idx = order[r[starts]]
    labels[pred_idx] = res_label
    lesion[pred_idx] = res_lesion
    return ImageMatch(labels, lesion)


# --------------------------------------------------------------------------- curves


def partial_area(fppi: np.ndarray, tpr: np.ndarray, max_fppi: float = 10.0) -> np.ndarray:
    """Normalised area under FROC curve(s) for FPpI in [0, max_fppi].

    ``fppi``/``tpr``: 1-D (one curve) or 2-D (one curve per row), nondecreasing along the last
    axis and starting at FPpI 0. Trapezoidal; the last segment is cut at ``max_fppi`` by linear
    interpolation; a curve that stops before ``max_fppi`` is extended flat at its last TPR.
    Returns area / max_fppi (a scalar array for 1-D input).
    """
    g = float(max_fppi)
    if not g > 0:
        raise EvaluationError(f"max_fppi must be positive, got {max_fppi}")
    x = np.atleast_2d(np.asarray(fppi, dtype=np.float64))
    y = np.atleast_2d(np.asarray(tpr, dtype=np.float64))
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    xe = np.minimum(x1, g)
    width = x1 - x0
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(width > 0, (xe - x0) / width, 0.0)
    ye = y0 + (y1 - y0) * frac
    seg = np.where(x0 < g, (xe - x0) * (y0 + ye) * 0.5, 0.0)
    area = seg.sum(axis=1)
    xl, yl = x[:, -1], y[:, -1]
    area = area + np.where(xl < g, yl * (g - xl), 0.0)
    out = area / g
    return out[0] if np.ndim(fppi) == 1 else out


def curve_value(fppi: np.ndarray, tpr: np.ndarray, at: float | Sequence[float]) -> np.ndarray:
    """TPR of a FROC curve at given FPpI values (same interpolation as :func:`partial_area`).

    At an FPpI reached by several points (a vertical step) the highest TPR is used; between
    points the value is interpolated linearly; past the last point it stays flat.
    """
    x = np.asarray(fppi, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    q = np.atleast_1d(np.asarray(at, dtype=np.float64))
    k = np.searchsorted(x, q, side="right")  # points with x <= q
    k = np.clip(k, 1, len(x))
    lo = k - 1
    hi = np.minimum(k, len(x) - 1)
    xa, xb, ya, yb = x[lo], x[hi], y[lo], y[hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where((xb > xa) & (hi > lo), (q - xa) / (xb - xa), 0.0)
    return ya + (yb - ya) * np.clip(t, 0.0, 1.0)


@dataclass
class FROCResult:
    """A FROC curve with the per-prediction outcomes it was built from.

    Curve arrays (``fppi``, ``tpr``, ``thresholds``, ``tp``, ``fp``) start with the origin,
    whose threshold is +inf. The flat per-prediction arrays (``pred_*``) hold every prediction
    that counts (duplicates only when ``duplicates="fp"``) and are what the bootstrap reuses.
    """

    fppi: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_lesions: int
    n_images: int
    n_fp_images: int
    image_ids: list[str]
    lesions_per_image: np.ndarray
    fp_image: np.ndarray  # bool per image: its FPs count and it is in the FPpI denominator
    pred_image: np.ndarray
    pred_score: np.ndarray
    pred_tp: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    area_cm2: float | None = None

    def aufroc(self, max_fppi: float = 10.0) -> float:
        """AUFROC_γ: area under the curve for FPpI in [0, γ], divided by γ (in [0, 1])."""
        return float(partial_area(self.fppi, self.tpr, max_fppi))

    def sensitivity_at(
        self, fppi: Iterable[float] = DEFAULT_SENSITIVITY_FPPI
    ) -> dict[float, float]:
        """TPR at each requested FPpI (linear interpolation between operating points)."""
        at = [float(v) for v in fppi]
        vals = curve_value(self.fppi, self.tpr, at)
        return {a: float(v) for a, v in zip(at, vals, strict=True)}

    @property
    def fp_per_cm2(self) -> np.ndarray | None:
        """FP per cm² at each point (``None`` without pixel spacing)."""
        if not self.area_cm2:
            return None
        return self.fp / self.area_cm2

    def threshold_at(self, fppi: float) -> float:
        """Lowest score threshold whose operating point has FPpI <= ``fppi``."""
        k = int(np.searchsorted(self.fppi, fppi, side="right")) - 1
        return float(self.thresholds[max(k, 0)])


def curve_from_outcomes(
    scores: np.ndarray, is_tp: np.ndarray, n_lesions: float, n_images: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fppi, tpr, thresholds, tp, fp) from flat prediction outcomes (every prediction is TP or FP)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(is_tp, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    tpc = np.cumsum(t, dtype=np.int64)
    fpc = np.arange(1, len(s) + 1, dtype=np.int64) - tpc
    ends = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.r_[0, tpc[ends]]
    fp = np.r_[0, fpc[ends]]
    thr = np.r_[np.inf, s[ends]]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = tp / n_lesions if n_lesions > 0 else np.zeros(len(tp))
        fppi = fp / n_images if n_images > 0 else np.where(fp > 0, np.inf, 0.0)
    return fppi.astype(np.float64), tpr.astype(np.float64), thr, tp, fp


# --------------------------------------------------------------------------- input coercion


def _as_predictions(v: Any, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    if v is None:
        return np.zeros((0, 2)), np.zeros(0)
    if isinstance(v, Detections):
        return v.points, v.scores
    if isinstance(v, tuple) and len(v) == 2:
        d = Detections(v[0], v[1])
        return d.points, d.scores
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 3:
        return a[:, :2], a[:, 2]
    if a.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    raise EvaluationError(
        f"predictions for image {image_id!r}: expected Detections, (points, scores) or an "
        f"(N, 3) array of y, x, score; got {type(v).__name__}"
    )


def _as_ground_truth(v: Any, image_id: str) -> tuple[np.ndarray, np.ndarray | None]:
    if v is None:
        return np.zeros((0, 2)), np.zeros(0)
    if isinstance(v, Sample):
        return v.points, v.radii
    if isinstance(v, tuple) and len(v) == 2:
        pts = np.asarray(v[0], dtype=np.float64).reshape(-1, 2)
        rad = None if v[1] is None else np.asarray(v[1], dtype=np.float64).reshape(-1)
        if rad is not None and len(rad) != len(pts):
            raise EvaluationError(
                f"ground truth for image {image_id!r}: {len(pts)} points but {len(rad)} radii"
            )
        return pts, rad
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    if a.ndim == 2 and a.shape[1] == 3:
        return a[:, :2], a[:, 2]
    if a.ndim == 2 and a.shape[1] == 2:
        return a, None
    raise EvaluationError(
        f"ground truth for image {image_id!r}: expected a Sample, (points, radii) or an (N, 3) "
        f"array of y, x, radius; got {type(v).__name__}"
    )


def _image_list(
    predictions: Mapping[str, Any], ground_truth: Mapping[str, Any], image_ids: Iterable[str] | None
) -> list[str]:
    if image_ids is None:
        ids = list(dict.fromkeys([*ground_truth.keys(), *predictions.keys()]))
        return [str(i) for i in ids]
    ids = [str(i) for i in image_ids]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise EvaluationError(f"image list names some images twice: {', '.join(dup[:5])}")
    known = set(ids)
    for what, mapping in (("predictions", predictions), ("ground truth", ground_truth)):
        extra = [str(k) for k in mapping if str(k) not in known]
        if extra:
            more = f" (+{len(extra) - 5} more)" if len(extra) > 5 else ""
            raise EvaluationError(
                f"{what} for images not in the image list: {', '.join(extra[:5])}{more}"
            )
    return ids


# --------------------------------------------------------------------------- FROC


def froc_curve(
    predictions: Mapping[str, Any],
    ground_truth: Mapping[str, Any],
    image_ids: Iterable[str] | None = None,
    *,
    match: str | float = "bbox",
    duplicates: str = "fp",
    masks: Mapping[str, np.ndarray] | None = None,
    fp_images: str = "all",
    areas_cm2: Mapping[str, float] | None = None,
) -> FROCResult:
    """Lesion-based FROC over a set of images.

    ``predictions``: {image_id: Detections | (points, scores) | (N,3) y,x,score};
    ``ground_truth``: {image_id: Sample | (points, radii) | (N,3) y,x,radius}; an image missing
    from either mapping has no predictions / no lesions. ``image_ids``: the images evaluated
    (lesion-free ones count in FPpI); default = union of both mappings' keys.
    ``duplicates``: "fp" (default) or "drop". ``masks``: {image_id: bool tissue mask};
    predictions outside are ignored. ``fp_images``: "all" or "lesion-free" (FPs counted only
    on lesion-free images, FPpI = FP / lesion-free images, as in paper 002).
    ``areas_cm2``: {image_id: area in cm²} of the FP-counting images, for FP per cm².
    """
    if duplicates not in ("fp", "drop"):
        raise EvaluationError(f"duplicates must be 'fp' or 'drop', got {duplicates!r}")
    if fp_images not in ("all", "lesion-free"):
        raise EvaluationError(f"fp_images must be 'all' or 'lesion-free', got {fp_images!r}")
    predictions = {str(k): v for k, v in predictions.items()}
    ground_truth = {str(k): v for k, v in ground_truth.items()}
    ids = _image_list(predictions, ground_truth, image_ids)
    if not ids:
        raise EvaluationError("no images to evaluate")
    masks = {str(k): v for k, v in (masks or {}).items()}

    n_les = np.zeros(len(ids), dtype=np.int64)
    img_parts, score_parts, tp_parts = [], [], []
    n_dup = n_ign = n_fp_raw = n_tp = n_pred_in = 0
    for i, iid in enumerate(ids):
        pts, sc = _as_predictions(predictions.get(iid), iid)
        gpts, grad = _as_ground_truth(ground_truth.get(iid), iid)
        mask = masks.get(iid)
        try:
            m = match_image(pts, sc, gpts, grad, match=match, mask=mask)
        except EvaluationError as exc:
            raise EvaluationError(f"image {iid!r}: {exc}") from None
        n_les[i] = len(gpts)
        n_pred_in += len(sc)
        lab = m.labels
        n_ign += int(np.count_nonzero(lab == IGNORED))
        n_dup += int(np.count_nonzero(lab == DUPLICATE))
        n_tp += int(np.count_nonzero(lab == TP))
        n_fp_raw += int(np.count_nonzero(lab == FP))
        keep = (lab == TP) | (lab == FP)
        if duplicates == "fp":
            keep |= lab == DUPLICATE
        img_parts.append(np.full(int(keep.sum()), i, dtype=np.int64))
        score_parts.append(sc[keep])
        tp_parts.append(lab[keep] == TP)

    pred_image = np.concatenate(img_parts) if img_parts else np.zeros(0, np.int64)
    pred_score = np.concatenate(score_parts) if score_parts else np.zeros(0)
    pred_tp = np.concatenate(tp_parts) if tp_parts else np.zeros(0, bool)

    n_lesions = int(n_les.sum())
    if n_lesions == 0:
        raise EvaluationError("the ground truth has no lesions: the FROC curve is undefined")
    if fp_images == "lesion-free":
        fp_image = n_les == 0
        if not fp_image.any():
            raise EvaluationError("fp_images='lesion-free' but every image has lesions")
        # FPs of images with lesions are not counted at all
        drop = ~pred_tp & ~fp_image[pred_image]
        pred_image, pred_score, pred_tp = pred_image[~drop], pred_score[~drop], pred_tp[~drop]
    else:
        fp_image = np.ones(len(ids), dtype=bool)
    n_fp_images = int(fp_image.sum())

    fppi, tpr, thr, tp, fp = curve_from_outcomes(pred_score, pred_tp, n_lesions, n_fp_images)
    area = None
    if areas_cm2:
        missing = [iid for iid, f in zip(ids, fp_image, strict=True) if f and iid not in areas_cm2]
        if missing:
            raise EvaluationError(f"areas_cm2 lacks images: {', '.join(missing[:5])}")
        area = float(sum(float(areas_cm2[iid]) for iid, f in zip(ids, fp_image, strict=True) if f))
    counts = {
        "images": len(ids),
        "lesion_free_images": int(np.count_nonzero(n_les == 0)),
        "fp_images": n_fp_images,
        "lesions": n_lesions,
        "predictions": n_pred_in,
        "predictions_counted": len(pred_score),
        "tp": n_tp,
        "fp": int(len(pred_tp) - pred_tp.sum()),
        "duplicates": n_dup,
        "ignored_outside_mask": n_ign,
    }
    settings = {
        "match": match if isinstance(match, str) and match == "bbox" else float(match),
        "duplicates": duplicates,
        "fp_images": fp_images,
        "masks": bool(masks),
    }
    return FROCResult(
        fppi=fppi,
        tpr=tpr,
        thresholds=thr,
        tp=tp,
        fp=fp,
        n_lesions=n_lesions,
        n_images=len(ids),
        n_fp_images=n_fp_images,
        image_ids=ids,
        lesions_per_image=n_les,
        fp_image=fp_image,
        pred_image=pred_image,
        pred_score=pred_score,
        pred_tp=pred_tp,
        counts=counts,
        settings=settings,
        area_cm2=area,
    )


def aufroc(result: FROCResult, max_fppi: float = 10.0) -> float:
    """AUFROC_γ of a :class:`FROCResult` (see :func:`partial_area`)."""
    return result.aufroc(max_fppi)


def sensitivity_at(
    result: FROCResult, fppi: Iterable[float] = DEFAULT_SENSITIVITY_FPPI
) -> dict[float, float]:
    """TPR at the given FPpI values."""
    return result.sensitivity_at(fppi)
