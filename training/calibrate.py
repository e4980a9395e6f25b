"""``gravity calibrate MODEL DATA --out NEW``: choose NMS and the operating threshold on
validation images, never touching the weights.

The trainer stores the threshold at ``eval.target_fppi`` on the first ``eval.max_images``
validation images with the NMS the config named. This re-does both on a whole validation set:
for each (box, IoU) of a small grid it runs the FROC protocol (the network runs once per image;
NMS re-applied from the cached raw output), keeps the pair with the best AUFROC_γ, and stores
the threshold at ``target_fppi`` FPpI for it. Large lesions regress several points a few pixels
apart; a box that merges them removes duplicates that would count as false positives.

The same is done for each test-time augmentation mode asked for (``--tta``, default ``flips``
and ``d8``: averaged views score differently from one pass, so each mode gets its own γ and
NMS), stored as ``metadata["tta"][mode]``; a predictor with ``tta="auto"`` uses ``d8`` only
on a model calibrated for it.

``DATA`` is a benchmark folder (its ``val/`` split) or any data set folder
(all its images). The test split is never read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.core.tta import AVERAGED

NMS_GRID = {
    "mc": ((7.0, 0.5), (11.0, 0.5), (15.0, 0.5), (11.0, 0.3), (15.0, 0.3)),
    "ma": ((3.0, 0.5), (5.0, 0.5), (7.0, 0.5), (5.0, 0.3), (7.0, 0.3)),
}


class CalibrationError(ValueError):
    """The validation data cannot calibrate this model (message names the folder)."""


def _validation_samples(data: Path) -> list:
    from napari_gravity.data.datasets import open_dataset
    from napari_gravity.data.synthetic import load_benchmark

    if (data / "recipe.json").is_file() and (data / "val").is_dir():
        refs = load_benchmark(data)["val"]
    else:
        refs = open_dataset(data)
    samples = [r.load() for r in refs]
    if not samples:
        raise CalibrationError(f"{data}: no validation images")
    if sum(len(s.points) for s in samples) == 0:
        raise CalibrationError(f"{data}: the validation images hold no lesion")
    return samples


def calibrate_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    target_fppi: float = 1.0,
    grid: tuple[tuple[float, float], ...] | None = None,
    max_fppi: float = 10.0,
    tta: tuple[str, ...] = AVERAGED,
    fov_diameter: float | None = None,
) -> dict[str, Any]:
    """Calibrate ``model`` on ``data``'s validation images and write ``out`` (fp16 weights
    unchanged, config NMS / threshold and a ``calibration`` metadata record updated; one
    ``metadata["tta"]`` record per mode in ``tta``). ``fov_diameter``: store the field-of-view
    diameter (px) the model learned at (``fov_diameter_px``, :mod:`napari_gravity.core.fov`)."""
    from napari_gravity.core.model_io import load_model, save_model
    from napari_gravity.core.predictor import Predictor

    loaded = load_model(model)
    task = loaded.metadata.get("task") or "mc"
    grid = grid or NMS_GRID.get(task, NMS_GRID["mc"])
    samples = _validation_samples(Path(data))
    ids = [s.image_id or str(k) for k, s in enumerate(samples)]
    gt = dict(zip(ids, samples, strict=True))
    one = Predictor(loaded.model, loaded.config, device="cpu")
    table, raws = _grid_table(one, gt, ids, grid, target_fppi, max_fppi)
    best = max(table, key=lambda r: r["val_aufroc"])
    cfg = loaded.config
    cfg.nms_box, cfg.nms_iou, cfg.threshold = best["nms_box"], best["nms_iou"], best["threshold"]
    md = dict(loaded.metadata)
    md["threshold"] = best["threshold"]
    if fov_diameter is not None:
        md["fov_diameter_px"] = float(fov_diameter)
    md["calibration"] = {
        "rule": f"NMS (box, IoU) by validation AUFROC_{max_fppi:g}; threshold at "
        f"{target_fppi:g} FPpI on the same {len(samples)} validation images",
        "data": str(data),
        "grid": table,
        "chosen": best,
        "area_rule": _area_rule(one, raws, gt, ids, best, target_fppi),
    }
    modes = {}
    for mode in tta:
        pred = Predictor(loaded.model, cfg, device="cpu", tta=mode)
        rows, raws = _grid_table(pred, gt, ids, grid, target_fppi, max_fppi)
        chosen = max(rows, key=lambda r: r["val_aufroc"])
        rule = _area_rule(pred, raws, gt, ids, chosen, target_fppi)
        modes[mode] = {**chosen, "grid": rows, "area_rule": rule}
    if modes:
        md["tta"] = modes
    else:
        md.pop("tta", None)
    half = any(t.dtype.is_floating_point and t.dtype.itemsize == 2 for t in _tensors(model))
    save_model(out, loaded.model, cfg, md, half=half)
    return {**md["calibration"], "tta": md.get("tta", {})}


def _grid_table(pred, gt: dict, ids: list[str], grid, target_fppi: float, max_fppi: float):
    """One row per NMS (box, IoU): validation AUFROC and the threshold at ``target_fppi``
    (the network runs once per image; the NMS is re-applied from the cached output), and the
    cached outputs."""
    from napari_gravity.evaluation.froc import froc_curve

    raws = {i: pred.raw(s.image) for i, s in gt.items()}
    table = []
    for box, iou in grid:
        dets = {
            i: pred.from_raw(raws[i], mask=s.mask, threshold=pred.floor, nms_box=box, nms_iou=iou)
            for i, s in gt.items()
        }
        res = froc_curve(dets, gt, ids)
        thr = float(res.threshold_at(target_fppi))
        table.append(
            {
                "nms_box": float(box),
                "nms_iou": float(iou),
                "val_aufroc": round(res.aufroc(max_fppi), 4),
                "threshold": min(max(thr, 0.0), 1.0),
            }
        )
    return table, raws


def _area_rule(
    pred, raws: dict, gt: dict, ids: list[str], chosen: dict, target_fppi: float
) -> dict:
    """What :func:`napari_gravity.core.config.area_threshold` needs to keep the expected false
    positives of a whole image at ``target_fppi`` on images larger than these: the scores of
    the validation false positives at or above the chosen γ (with the chosen NMS; the network
    outputs are cached from the grid) and the validation images' pixels of tissue."""
    from napari_gravity.evaluation.froc import froc_curve

    dets = {
        i: pred.from_raw(
            raws[i],
            mask=s.mask,
            threshold=chosen["threshold"],
            nms_box=chosen["nms_box"],
            nms_iou=chosen["nms_iou"],
        )
        for i, s in gt.items()
    }
    res = froc_curve(dets, gt, ids)
    steps = np.diff(np.asarray(res.fp, dtype=np.int64))
    scores = np.repeat(np.asarray(res.thresholds[1:], dtype=np.float64), steps)
    tissue = sum(
        float(np.count_nonzero(s.mask)) if s.mask is not None else s.image.size for s in gt.values()
    )
    return {
        "fp_scores": [round(float(v), 6) for v in scores],
        "tissue_px": tissue,
        "target_fppi": float(target_fppi),
        "images": len(ids),
        "rule": "γ raised on an image with more tissue than the validation images' mean so "
        f"that it expects {target_fppi:g} false positive(s) in all (core.config.area_threshold)",
    }


def _tensors(path: str | Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for k in list(f.keys())[:4]:
            yield f.get_tensor(k)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="choose NMS and the operating threshold on validation images",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("model", help="model file, 'default' or a registry name")
    p.add_argument("data", help="benchmark folder (its val/ split) or a data set folder")
    p.add_argument("--out", required=True, help="the calibrated model file to write")
    p.add_argument("--target-fppi", type=float, default=1.0)
    p.add_argument(
        "--tta",
        default="flips,d8",
        help="test-time augmentation modes to calibrate as well: comma-separated flips / d8, "
        "or none (default flips,d8; 12 more passes per validation image)",
    )
    p.add_argument(
        "--fov-diameter",
        type=float,
        default=None,
        metavar="PX",
        help="microaneurysm models: the fundus field-of-view diameter (px) the training images "
        "had (the project's fundus data: 1200); images showing another are resampled to it",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import math

    from napari_gravity.core.registry import resolve_model

    if not (math.isfinite(args.target_fppi) and args.target_fppi > 0):
        raise CalibrationError(f"--target-fppi must be a positive number, got {args.target_fppi}")
    src = resolve_model(args.model)
    if Path(args.out).resolve() == Path(src).resolve():
        raise CalibrationError(f"--out {args.out}: choose another file than the model itself")
    modes = tuple(m for m in args.tta.split(",") if m and m != "none")
    bad = [m for m in modes if m not in AVERAGED]
    if bad:
        raise CalibrationError(f"--tta {args.tta}: unknown mode {bad[0]!r}; use flips, d8 or none")
    from napari_gravity.core.config import FOV_DIAMETER_RANGE

    fov, (lo, hi) = args.fov_diameter, FOV_DIAMETER_RANGE
    if fov is not None and not (math.isfinite(fov) and lo <= fov <= hi):
        raise CalibrationError(f"--fov-diameter {fov:g}: expected a diameter of {lo:g}-{hi:g} px")
    cal = calibrate_model(
        src, args.data, args.out, target_fppi=args.target_fppi, tta=modes, fov_diameter=fov
    )
    for row in cal["grid"]:
        mark = " <- chosen" if row == cal["chosen"] else ""
        print(
            f"  NMS box {row['nms_box']:g} IoU {row['nms_iou']:g}: val AUFROC "
            f"{100 * row['val_aufroc']:.2f} %, threshold {row['threshold']:.3f}{mark}"
        )
    for mode, rec in (cal.get("tta") or {}).items():
        print(
            f"  TTA {mode}: NMS box {rec['nms_box']:g} IoU {rec['nms_iou']:g}, val AUFROC "
            f"{100 * rec['val_aufroc']:.2f} %, threshold {rec['threshold']:.3f}"
        )
    print(f"gravity calibrate: wrote {args.out}")
    return 0
