"""The reviewed images on disk as data sets (Qt-free): the Review dock's folder queue, the
Retrain dock's fine-tuning set (with its held-out images) and the Evaluate dock's folder set.
An image's review lives in its sidecar ``IMG.review.json``, its ground truth in ``IMG.csv``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _api
from . import review as rv
from ._reader import is_points_csv
from .runner import train_command
from .sidecar import IMAGE_SUFFIXES, SidecarError, gt_csv_path, read_review, sidecar_path

DEFAULT_RADIUS = 3.0
MIN_HOLDOUT_IMAGES = 4  # fewer reviewed images: train on all, no independent validation


def runs_dir() -> Path:
    root = os.environ.get("GRAVITY_RUNS") or Path.home() / ".napari-gravity" / "runs"
    return Path(root)


def folder_images(folder: str | Path) -> list[Path]:
    """Images of a folder (our suffixes), sorted by name; masks are skipped."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(".mask")
    )


def order_queue(paths: list[Path], by_uncertainty: bool) -> list[Path]:
    """Name order, or: images needing most review first (sidecar uncertainty, then
    unreviewed ones by name, done ones last)."""
    if not by_uncertainty:
        return list(paths)

    def key(p: Path):
        side = sidecar_path(p)
        if not side.exists():
            return (1, 0.0, p.name)
        try:
            rev = read_review(side)
        except SidecarError:
            return (1, 0.0, p.name)
        if rev.status == "done":
            return (2, 0.0, p.name)
        return (0, -rv.uncertainty(rev.features), p.name)

    return sorted(paths, key=key)


@dataclass
class TrainingImage:
    path: Path
    points: np.ndarray
    radii: np.ndarray


def reviewed_images(paths) -> list[TrainingImage]:
    """Images whose review is usable for training, with their lesion points.

    An image counts when its sidecar says ``done`` (no pending point left) or when its
    accepted points were promoted to a ground-truth CSV. Its lesions are the ground-truth
    CSV rows (not pending / rejected) plus the sidecar's accepted / added points.
    """
    out = []
    seen = set()
    for p in paths:
        p = Path(p)
        if str(p) in seen:
            continue
        seen.add(str(p))
        side, gt = sidecar_path(p), gt_csv_path(p)
        try:
            rev = read_review(side) if side.exists() else None
        except SidecarError:
            rev = None
        has_gt = gt.exists() and is_points_csv(gt)
        if rev is None or not (rev.status == "done" or (has_gt and rev.status != "unreviewed")):
            continue
        pts, radii = np.zeros((0, 2)), np.zeros(0)
        if has_gt:
            pts, radii = _api.read_points_csv(gt).lesions(DEFAULT_RADIUS)
        extra = rv.new_points(rev.points[rv.lesion_mask(rev.features)], pts, DEFAULT_RADIUS)
        pts = np.concatenate([pts.reshape(-1, 2), extra])
        radii = np.concatenate([radii, np.full(len(extra), DEFAULT_RADIUS)])
        out.append(TrainingImage(p, pts, radii))
    return out


def image_id(im: TrainingImage) -> str:
    """The trainer's image id of a training image (its file stem in the dataset folder)."""
    return im.path.stem


def split_holdout(images: list[TrainingImage]) -> tuple[list, list]:
    """(train, held out): with ``MIN_HOLDOUT_IMAGES`` or more, a quarter of the images (those
    with lesions first, the last by name) are held out for validation; else none."""
    if len(images) < MIN_HOLDOUT_IMAGES:
        return list(images), []
    n_val = max(1, round(len(images) / 4))
    order = sorted(images, key=lambda i: (len(i.points) > 0, i.path.name))
    held = {id(i) for i in order[-n_val:]}
    return [i for i in images if id(i) not in held], [i for i in images if id(i) in held]


def build_dataset(images: list[TrainingImage], folder: Path) -> Path:
    """A folder dataset (``IMG.<ext>`` + ``IMG.csv``) of the reviewed images for the trainer."""
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        dest = folder / im.path.name
        try:
            os.symlink(im.path.resolve(), dest)
        except OSError:
            shutil.copy2(im.path, dest)
        _api.write_points_csv(gt_csv_path(dest), im.points, im.radii)
    return folder


def model_points(points, features, threshold: float | None = None):
    """The model's points (and scores) of a review: all, or those ≥ ``threshold`` not rejected."""
    f = rv.clean_features(features, len(points))
    keep = f["source"] == "model"
    if threshold is not None:
        keep &= (f["status"] != "rejected") & (f["score"] >= threshold)
    keep = keep.to_numpy()
    return np.asarray(points, float).reshape(-1, 2)[keep], f["score"].to_numpy(float)[keep]


def evaluation_items(paths, default_radius=DEFAULT_RADIUS) -> dict[str, tuple]:
    """Images of the queue that have both a review sidecar and a ground-truth CSV."""
    out = {}
    for p in paths:
        side, gt = sidecar_path(p), gt_csv_path(p)
        if not (side.exists() and gt.exists()):
            continue
        try:
            rev = read_review(side)
        except SidecarError:
            continue
        gt_pts, gt_radii = _api.read_points_csv(gt).lesions(default_radius)
        out[Path(p).name] = (*model_points(rev.points, rev.features), gt_pts, gt_radii)
    return out


def finetune_run(images, init, config, epochs, name, parent_threshold=None):
    """(trainer command, run folder, held-out images) of a fine-tune of model ``init`` on the
    reviewed ``images``: a folder data set of them in a new run folder, a quarter held out for
    validation when there are enough (:func:`split_holdout`), else the parent's threshold kept
    (validation would run on the training images)."""
    runs_dir().mkdir(parents=True, exist_ok=True)
    prefix = time.strftime("finetune-%Y%m%d-%H%M%S-")
    run_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=runs_dir()))
    train, held_out = split_holdout(images)
    overrides = {
        "data.root": build_dataset(images, run_dir / "data"),
        "data.format": "folder",
        "data.synthetic": "null",
        "data.splits": "null",
        "data.train_ids": json.dumps([image_id(i) for i in train]),
        "data.val_ids": json.dumps([image_id(i) for i in held_out]),
    }
    if not held_out and isinstance(parent_threshold, (int, float)):
        overrides["eval.fixed_threshold"] = float(parent_threshold)
    cmd = train_command(config or "finetune", run_dir, init=init, overrides=overrides)
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name) or "finetuned"
    return [*cmd, "--epochs", str(epochs), "--no-progress", "--register", name], run_dir, held_out


def compare_models(models: dict[str, str], images: list[tuple]) -> dict[str, dict]:
    """Each model on the same held-out images: AUFROC and, at the model's own γ, sensitivity
    and false positives per image. ``images``: (path, gt points (y, x), gt radii)."""
    from napari_gravity.data.readers import read_image

    out: dict[str, dict] = {}
    for label, path in models.items():
        det = _api.load_detector(path)
        p = det.defaults
        items, tp, fp, n_les = {}, 0, 0, 0
        for k, (img_path, gpts, gradii) in enumerate(images):
            image = np.asarray(read_image(img_path).image, dtype=np.float32)
            d = _api.detections(det.raw(image), 0.0, p["nms_box"], p["nms_iou"])
            gpts = np.asarray(gpts, float).reshape(-1, 2)
            items[f"{k}:{Path(img_path).name}"] = (d.points, d.scores, gpts, gradii)
            keep = d.scores >= p["threshold"]
            labels, hit = _api.match(d.points[keep], d.scores[keep], gpts, gradii)
            tp, fp, n_les = tp + int(hit.sum()), fp + int((labels != 1).sum()), n_les + len(gpts)
        rep, _ = _api.evaluate(items)
        out[label] = {
            "aufroc": float(rep["aufroc"]),
            "max_fppi": float(rep["max_fppi"]),
            "threshold": float(p["threshold"]),
            "sensitivity": tp / n_les if n_les else float("nan"),
            "fp_per_image": fp / max(len(images), 1),
            "n_images": len(images),
            "n_lesions": n_les,
        }
    return out
