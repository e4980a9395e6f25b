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
import math
import os
import sys
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
    p.add_argument(
        "model",
        help="model file, a registry name (NAME or NAME:vN), or 'default': the bundled model that "
        "fits each image (default_mc for mammograms, default_ma for fundus photographs)",
    )
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
    p.add_argument(
        "--format",
        choices=("inbreast", "eophtha", "folder"),
        default=None,
        help="read INPUTS as data set folders of this format (open_dataset): image ids, "
        "orientation (INbreast: every breast facing the same way, as in training and in "
        "make_benchmark's test_ground_truth.csv) and masks as the trainer sees them; default: "
        "plain image files, ids = file names",
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

        try:
            det = load_retinanet(path, device=dev)
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise PredictError(
                f"{path}: not a usable RetinaNet model file ({type(exc).__name__}: "
                f"{str(exc)[:200]})"
            ) from None
        for name, t in det.model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise PredictError(f"{path}: tensor {name!r} holds NaN/inf values (a broken model)")
        thr = md.get("threshold", 0.5)
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 <= thr <= 1.0:
            raise PredictError(
                f"{path}: metadata key 'threshold': must be in [0, 1], got {thr!r}"[:300]
            )
        return det, md, float(thr), path
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


def route_default(paths: list[Path], ids: list[str]) -> dict[str, tuple[list[Path], list[str]]]:
    """``{task: (paths, ids)}``: each image goes to the bundled model of its task
    (:func:`napari_gravity.core.task.guess_task_file`); a task whose model is not installed
    falls back to ``default_mc`` with a message."""
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.core.task import guess_task_file

    groups: dict[str, tuple[list[Path], list[str]]] = {}
    for p, i in zip(paths, ids, strict=True):
        task, _ = guess_task_file(getattr(p, "path", p))
        if default_model_path(task) is None:
            print(
                f"gravity predict: default_{task} is not installed; {p} uses default_mc",
                file=sys.stderr,
            )
            task = "mc"
        groups.setdefault(task, ([], []))
        groups[task][0].append(p)
        groups[task][1].append(i)
    for task, (g, _) in groups.items():
        print(f"gravity predict: {len(g)} image(s) -> default_{task}", file=sys.stderr)
    return groups


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
    failures_out: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Detections], list[dict[str, Any]]]:
    """Detections per image id, and one summary row per image. With ``batch_size`` > 1 and a
    GravityNet ``Predictor``, consecutive images of the same size share one forward pass.

    An image that cannot be read or processed is skipped, reported on stderr and appended to
    ``failures_out`` (``{image, path, error}``); the other images go on."""
    from tqdm.auto import tqdm

    from napari_gravity.data.readers import read_image

    batched = batch_size > 1 and hasattr(detector, "raw_batch") and hasattr(detector, "from_raw")
    preds: dict[str, Detections] = {}
    rows: list[dict[str, Any]] = []
    pending: list[tuple[str, Path, np.ndarray, np.ndarray | None]] = []
    failures: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        try:  # one forward pass per shape
            raws = detector.raw_batch([im for _, _, im, _ in pending])
        except (ValueError, MemoryError, RuntimeError) as exc:
            for iid, p, _, _ in pending:
                _fail(failures, iid, p, exc)
            pending.clear()
            return
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

    for item, iid in tqdm(list(zip(paths, ids, strict=True)), desc="predict", disable=not progress):
        p = Path(getattr(item, "path", item))
        try:
            if hasattr(item, "load"):  # a data set's SampleRef: its orientation and mask
                sample = item.load()
                image = np.asarray(sample.image, dtype=np.float32)
                mask = sample.mask if mask_mode == "auto" and sample.mask is not None else None
                if mask is None:
                    mask = image_mask(p, image, mask_mode, task)
            else:
                image = read_image(p, channel=channel).image
                mask = image_mask(p, image, mask_mode, task)
        except (ValueError, OSError, MemoryError) as exc:
            _fail(failures, iid, p, exc)
            continue
        if batched:
            if pending and pending[0][2].shape != image.shape:
                flush()
            pending.append((iid, p, image, mask))
            if len(pending) >= batch_size:
                flush()
            continue
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"mask": mask, "threshold": threshold}
        if nms_box is not None:
            kwargs["nms_box"] = nms_box
        try:
            det = detector.detect(image, **kwargs)
        except (ValueError, MemoryError, RuntimeError) as exc:
            _fail(failures, iid, p, exc)
            continue
        dt = time.perf_counter() - t0
        preds[iid] = det
        rows.append(
            {
                "image": iid,
                "path": str(p),
                "shape": list(image.shape),
                "detections": len(det),
                "mask_fraction": None if mask is None else float(mask.mean()),
                "seconds": dt,
            }
        )
    flush()
    if failures_out is not None:
        failures_out.extend(failures)
    return preds, rows


def _fail(failures: list[dict[str, Any]], iid: str, path: Path, exc: BaseException) -> None:
    """Record (and report on stderr) an image that could not be processed; the run goes on."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    if str(path) not in text:
        text = f"{path}: {text}"
    text = text if len(text) <= 500 else text[:495] + " ..."
    failures.append({"image": iid, "path": str(path), "error": text})
    print(f"gravity predict: skipped {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from napari_gravity.evaluation.io import write_predictions_csv

    if args.threshold is not None and not (0.0 <= args.threshold <= 1.0):
        raise PredictError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.nms_box is not None and not (math.isfinite(args.nms_box) and args.nms_box > 0):
        raise PredictError(
            f"--nms-box must be a positive number of pixels, got {args.nms_box:g} "
            "(it is the side of the non-maximum-suppression box; omit it for the model's)"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.format:
        from napari_gravity.data.datasets import open_dataset

        paths = [r for root in args.inputs for r in open_dataset(root, format=args.format)]
        ids = [r.image_id for r in paths]
        if not paths:
            raise PredictError(f"no {args.format} images in {', '.join(args.inputs)}")
    else:
        paths = collect_images(args.inputs)
        ids = image_ids(paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    failures: list[dict[str, Any]] = []
    # 'default' picks the bundled model that fits each image (mammogram -> default_mc,
    # fundus photograph -> default_ma) from the file's header and a thumbnail
    groups = route_default(paths, ids) if args.model == "default" else {None: (paths, ids)}
    preds: dict[str, Detections] = {}
    rows: list[dict[str, Any]] = []
    used: dict[str, dict[str, Any]] = {}
    for task, (g_paths, g_ids) in groups.items():
        spec = args.model if task is None else f"default_{task}"
        detector, md, thr, model_path = load_detector(spec, args.device)
        threshold = float(args.threshold) if args.threshold is not None else thr
        used[spec] = {"path": str(model_path), "task": md.get("task"), "threshold": threshold}
        p_, r_ = predict_paths(
            detector,
            g_paths,
            g_ids,
            threshold,
            args.channel,
            args.nms_box,
            progress=not args.no_progress and os.environ.get("GRAVITY_NO_PROGRESS") != "1",
            batch_size=max(1, int(args.batch_size)),
            mask_mode=args.mask,
            task=md.get("task"),
            failures_out=failures,
        )
        for r in r_:
            r["model"] = spec
        preds.update(p_)
        rows += r_
    preds = {i: preds[i] for i in ids if i in preds}  # input order, whatever the routing
    failed_ids = {f["image"] for f in failures}
    ok_ids = [i for i in ids if i not in failed_ids]
    csv_path = write_predictions_csv(out / "predictions.csv", preds)
    secs = [r["seconds"] for r in rows]
    summary: dict[str, Any] = {
        "model": str(model_path),
        "model_name": md.get("name"),
        "threshold": threshold,
        "mask": args.mask,
        "task": md.get("task"),
        "n_images": len(rows),
        "n_failed": len(failures),
        "failed": failures,
        "n_detections": int(sum(r["detections"] for r in rows)),
        "seconds_total": time.time() - t0,
        "seconds_per_image_mean": float(np.mean(secs)) if secs else None,
        "predictions_csv": str(csv_path),
        "images": rows,
    }
    if len(used) > 1:  # several bundled models: each image row names its model
        summary.update(model="default (per image)", model_name=None, threshold=None, task=None)
    summary["models"] = used
    if args.evaluate and ok_ids:
        summary["evaluation"] = evaluate_predictions(
            preds, args.evaluate, out / "evaluation", ok_ids
        )
    from napari_gravity.fileio import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    at = ", ".join(f"{k} at threshold {v['threshold']:.3f}" for k, v in used.items())
    print(
        f"gravity predict: {summary['n_detections']} detection(s) in {len(rows)} image(s) "
        f"({at}) -> {csv_path}"
    )
    if "evaluation" in summary:
        ev = summary["evaluation"]
        print(
            f"gravity predict: AUFROC_{ev.get('max_fppi', 10):g} = {ev.get('aufroc', float('nan')):.4f}"
        )
    if failures:
        print(
            f"gravity predict: error: {len(failures)} of {len(paths)} image(s) failed "
            f"(listed in {out / 'summary.json'} under 'failed')",
            file=sys.stderr,
        )
        return 1
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
