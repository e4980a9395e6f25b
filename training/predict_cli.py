"""``gravity predict MODEL INPUTS... --out DIR``: detect lesions in images or folders.

Writes ``DIR/predictions.csv`` (``image,y,x,score``, the evaluation package's format) and
``DIR/summary.json`` (model, threshold, per-image counts and timings). ``--evaluate G.csv``
chains into the evaluation (``gravity evaluate``) and writes its report into ``DIR/evaluation``.
MODEL is a file path, ``default``, or a registry name (``NAME``, ``NAME:vN``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.types import Detections

log = logging.getLogger("training.predict")


class PredictError(ValueError):
    """Bad predict input (message names the file)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="detect lesions with a model over images or folders",
        description="Run a GravityNet (or RetinaNet comparator) model over image files/folders.",
    )
    p.add_argument("model", help="model file, 'default', or a registry name (NAME or NAME:vN)")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--threshold", type=float, help="score threshold γ (default: the model's)")
    p.add_argument(
        "--batch-size", type=int, default=1, help="images per forward pass (same size only)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--channel", default="green", help="channel of colour images (default green)")
    p.add_argument("--nms-box", type=float, help="NMS box side L in pixels (default: the model's)")
    p.add_argument(
        "--evaluate",
        metavar="G.csv",
        help="ground-truth CSV (image,y,x,radius) to evaluate against",
    )
    p.add_argument(
        "--mask",
        choices=("auto", "breast", "fundus", "file", "none"),
        default="auto",
        help="tissue mask; predictions outside are dropped. auto (default): IMG.mask.png beside "
        "the image if present, else the breast mask for an MC model (task 'mc') or the fundus "
        "mask for an MA model (task 'ma'); file: IMG.mask.png only",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files named or found (recursively) in folders, sorted, skipping masks."""
    from napari_gravity.data.readers import IMAGE_EXTS

    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if (
                    q.is_file()
                    and q.suffix.lower() in IMAGE_EXTS
                    and not q.name.endswith((".mask.png",))
                ):
                    out.append(q)
        elif p.is_file():
            out.append(p)
        else:
            raise PredictError(f"{p}: no such file or folder")
    if not out:
        raise PredictError(f"no images found in {', '.join(inputs)}")
    return out


def image_ids(paths: list[Path]) -> list[str]:
    """Image ids = file stems; made unique with the parent folder when stems collide."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    ids = []
    for p in paths:
        ids.append(f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem)
    if len(set(ids)) != len(ids):
        ids = [str(p) for p in paths]
    return ids


def load_detector(model_spec: str, device: str = "auto"):
    """(detector with .detect(image, mask=, threshold=), metadata, default threshold)."""
    import torch

    from napari_gravity.core.registry import read_metadata, resolve_model

    path = resolve_model(model_spec)
    md = read_metadata(path)
    dev = (
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    if md.get("model") == "retinanet":
        from training.retinanet import load_retinanet

        det = load_retinanet(path, device=dev)
        return det, md, float(md.get("threshold", 0.5)), path
    from napari_gravity.core.model_io import load_model
    from napari_gravity.core.predictor import Predictor

    loaded = load_model(path, device=dev)
    thr = md.get("threshold", getattr(loaded.config, "threshold", 0.5))
    return Predictor(loaded.model, loaded.config, device=dev), md, float(thr), path


def image_mask(path: Path, image: np.ndarray, mode: str, task: str | None) -> np.ndarray | None:
    """The tissue / field-of-view mask of an image for ``--mask MODE`` (None = no mask)."""
    if mode == "none":
        return None
    side = path.with_name(path.stem + ".mask.png")
    if mode in ("auto", "file") and side.is_file():
        from napari_gravity.data.readers import read_image

        return read_image(side).image > 0
    if mode == "file":
        return None
    from napari_gravity.data.masks import tissue_mask

    return tissue_mask(image, mode if mode in ("breast", "fundus") else task)


def predict_paths(
    detector: Any,
    paths: list[Path],
    ids: list[str],
    threshold: float,
    channel: str = "green",
    nms_box: float | None = None,
    progress: bool = True,
    batch_size: int = 1,
    mask_mode: str = "file",
    task: str | None = None,
) -> tuple[dict[str, Detections], list[dict[str, Any]]]:
    """Detections per image id, and one summary row per image. With ``batch_size`` > 1 and a
    GravityNet ``Predictor``, consecutive images of the same size share one forward pass."""
    from tqdm.auto import tqdm

    from napari_gravity.data.readers import read_image

    batched = batch_size > 1 and hasattr(detector, "raw_batch") and hasattr(detector, "from_raw")
    preds: dict[str, Detections] = {}
    rows: list[dict[str, Any]] = []
    pending: list[tuple[str, Path, np.ndarray, np.ndarray | None]] = []

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        raws = detector.raw_batch([im for _, _, im, _ in pending])  # one forward pass per shape
        for (iid, p, im, mask), raw in zip(pending, raws, strict=True):
            det = detector.from_raw(raw, mask=mask, threshold=threshold, nms_box=nms_box)
            preds[iid] = det
            rows.append(
                {
                    "image": iid,
                    "path": str(p),
                    "shape": list(im.shape),
                    "detections": len(det),
                    "mask_fraction": None if mask is None else float(mask.mean()),
                    "seconds": (time.perf_counter() - t0) / len(pending),
                }
            )
        pending.clear()

    for p, iid in tqdm(list(zip(paths, ids, strict=True)), desc="predict", disable=not progress):
        rec = read_image(p, channel=channel)
        mask = image_mask(p, rec.image, mask_mode, task)
        if batched:
            if pending and pending[0][2].shape != rec.image.shape:
                flush()
            pending.append((iid, p, rec.image, mask))
            if len(pending) >= batch_size:
                flush()
            continue
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"mask": mask, "threshold": threshold}
        if nms_box is not None:
            kwargs["nms_box"] = nms_box
        det = detector.detect(rec.image, **kwargs)
        dt = time.perf_counter() - t0
        preds[iid] = det
        rows.append(
            {
                "image": iid,
                "path": str(p),
                "shape": list(rec.image.shape),
                "detections": len(det),
                "mask_fraction": None if mask is None else float(mask.mean()),
                "seconds": dt,
            }
        )
    flush()
    return preds, rows


def run(args: argparse.Namespace) -> int:
    from napari_gravity.evaluation.io import write_predictions_csv

    if args.threshold is not None and not (0.0 <= args.threshold <= 1.0):
        raise PredictError(f"--threshold must be in [0, 1], got {args.threshold}")
    paths = collect_images(args.inputs)
    ids = image_ids(paths)
    detector, md, thr, model_path = load_detector(args.model, args.device)
    threshold = float(args.threshold) if args.threshold is not None else thr
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    preds, rows = predict_paths(
        detector,
        paths,
        ids,
        threshold,
        args.channel,
        args.nms_box,
        progress=not args.no_progress and os.environ.get("GRAVITY_NO_PROGRESS") != "1",
        batch_size=max(1, int(args.batch_size)),
        mask_mode=args.mask,
        task=md.get("task"),
    )
    csv_path = write_predictions_csv(out / "predictions.csv", preds)
    secs = [r["seconds"] for r in rows]
    summary: dict[str, Any] = {
        "model": str(model_path),
        "model_name": md.get("name"),
        "threshold": threshold,
        "mask": args.mask,
        "task": md.get("task"),
        "n_images": len(rows),
        "n_detections": int(sum(r["detections"] for r in rows)),
        "seconds_total": time.time() - t0,
        "seconds_per_image_mean": float(np.mean(secs)) if secs else None,
        "predictions_csv": str(csv_path),
        "images": rows,
    }
    if args.evaluate:
        summary["evaluation"] = evaluate_predictions(preds, args.evaluate, out / "evaluation", ids)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"gravity predict: {summary['n_detections']} detection(s) in {len(rows)} image(s) at "
        f"threshold {threshold:.3f} -> {csv_path}"
    )
    if "evaluation" in summary:
        ev = summary["evaluation"]
        print(
            f"gravity predict: AUFROC_{ev.get('max_fppi', 10):g} = {ev.get('aufroc', float('nan')):.4f}"
        )
    return 0


def evaluate_predictions(
    preds: dict[str, Detections], gt_csv: str, out_dir: Path, ids: list[str]
) -> dict[str, Any]:
    """Evaluate predictions against a ground-truth CSV with the evaluation package."""
    from napari_gravity.evaluation.froc import froc_curve
    from napari_gravity.evaluation.io import read_ground_truth_csv

    gt = read_ground_truth_csv(gt_csv)
    # Every predicted image is evaluated (the paper's protocol counts the FPs of lesion-free
    # images); an image with no row in the CSV is taken as lesion-free and listed in the summary.
    missing = [i for i in ids if i not in gt]
    if len(missing) == len(ids):
        raise PredictError(
            f"{gt_csv}: none of the predicted images are in the ground truth (e.g. {ids[0]!r}); "
            "image ids are file names without extension"
        )
    if missing:
        log.warning("%d image(s) have no row in %s and count as lesion-free", len(missing), gt_csv)
    unpredicted = [i for i in gt if i not in set(ids)]
    res = froc_curve({i: preds[i] for i in ids}, {i: gt[i] for i in ids if i in gt}, ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "ground_truth": str(gt_csv),
        "n_images": len(ids),
        "n_lesions": res.n_lesions,
        "max_fppi": 10.0,
        "aufroc": res.aufroc(10.0),
        "sensitivity": {str(k): v for k, v in res.sensitivity_at().items()},
        "images_without_ground_truth_rows": missing,
        "ground_truth_images_not_predicted": unpredicted,
    }
    try:  # the evaluation package's report (JSON + Markdown + FROC plot)
        from napari_gravity.evaluation.plots import plot_froc
        from napari_gravity.evaluation.report import build_report, report_markdown, write_json

        rep = build_report(res, name="model")
        write_json(out_dir / "report.json", rep)
        (out_dir / "report.md").write_text(report_markdown([rep]))
        plot_froc([rep], out_dir / "froc", formats=("png",))
    except Exception as exc:  # the numbers above are already saved
        log.warning("evaluation report/plot skipped: %s", exc)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result
