"""``gravity predict MODEL INPUTS... --out DIR``: detect lesions in images or folders.

Writes ``DIR/predictions.csv`` (``image,y,x,score``, the evaluation package's format) and
``DIR/summary.json`` (model, threshold, per-image counts and timings). ``--evaluate G.csv``
chains into the evaluation (``gravity evaluate``) and writes its report into ``DIR/evaluation``.
MODEL is a file path, ``default``, or a registry name (``NAME``, ``NAME:vN``).

It runs as a pipeline:

- **Reading in parallel.** ``--workers N`` DataLoader worker processes read the images
  (DICOM/TIFF/PNG/JPEG, or a data set's ``SampleRef.load()``) and compute their tissue masks
  while the main process runs the network; ``0`` reads in the main process. An image that cannot
  be read becomes one ``failed`` entry of ``summary.json`` and the run goes on. If a worker
  process dies (a decoder crash, the OOM killer), the rest of the images are read in the main
  process.
- **Streaming.** As soon as an image's detections exist, one JSON line (its summary row and its
  CSV rows) is appended to the journal ``DIR/predict_state.jsonl``, then its rows to
  ``DIR/predictions.csv`` (one ``os.write`` each; these two appends are the only writes that are
  not atomic). A crash (``kill -9``, Ctrl-C) leaves a readable CSV of the images done so far (at
  most one image behind the journal); ``--resume`` keeps every image whose journal line is
  whole, rebuilds the CSV from the journal and predicts only the other images (images that
  failed are tried again; a torn last line after a power loss is dropped, and its image predicted
  again). At the end the CSV is rewritten atomically in input order,
  ``summary.json`` is written atomically and the journal is removed: the final files are those
  of a run without streaming. ``--resume`` also works on a finished run (it reads
  ``summary.json``), e.g. after new images were added to a folder. A resume with other
  settings (model, threshold, NMS box, mask, channel, format) is refused.
- **Sharding.** Under ``torchrun`` (``WORLD_SIZE`` > 1; ``training.distributed``), rank ``r``
  predicts ``todo[r::world]`` of the images not done yet and streams them to
  ``DIR/predictions.rank{r}.csv`` + ``DIR/predict_state.rank{r}.jsonl``; after a barrier rank 0
  merges them into the one ``predictions.csv`` / ``summary.json``, identical (up to timings)
  to those of a single process. ``DIR`` must be on a file system every node sees.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.core.tta import AVERAGED, MODES
from napari_gravity.types import Detections

log = logging.getLogger("training.predict")

CSV_NAME = "predictions.csv"
SUMMARY_NAME = "summary.json"
STATE_NAME = "predict_state.jsonl"
CSV_HEADER = "image,y,x,score"


class PredictError(ValueError):
    """Bad predict input (message names the file)."""


def default_workers() -> int:
    """min(4, CPUs - 1): one core is left to the process running the network. Under torchrun
    the CPUs are shared by the node's ranks (``LOCAL_WORLD_SIZE``)."""
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(0, min(4, (os.cpu_count() or 1) // ranks - 1))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="detect lesions with a model over images or folders",
        description="Run a GravityNet (or RetinaNet comparator) model over image files/folders. "
        "Results stream to DIR/predictions.csv (--resume continues an interrupted run). Under "
        "torchrun (e.g. torchrun --nproc_per_node 8 -m training predict ...) each rank predicts "
        "a shard of the images and rank 0 merges them into the one CSV; DIR must be shared.",
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
    p.add_argument(
        "--bf16",
        action="store_true",
        help="on the CPU: bf16 autocast (about 1.7x faster where the CPU has native bf16; "
        "default_mc lost 0.4 AUFROC points with it on mc-bench, benchmarks/cpu_detect.py)",
    )
    p.add_argument("--channel", default="green", help="channel of colour images (default green)")
    p.add_argument("--nms-box", type=float, help="NMS box side L in pixels (default: the model's)")
    p.add_argument(
        "--tta",
        choices=("auto", *MODES),
        default="auto",
        help="test-time augmentation: the network on 4 (flips) or 8 (d8: flips and 90° turns) "
        "views, outputs averaged per gravity point, each mode with its own calibrated γ. auto "
        "(default): d8 where the model file is calibrated for it and the network input is at "
        "most 2.5 megapixels (tiles, crops; +2 to +6 AUFROC points for default_mc, 8x the "
        "time), one pass on larger images (whole mammograms; see --tta-whole)",
    )
    p.add_argument(
        "--tta-whole",
        choices=MODES,
        default="off",
        help="with --tta auto: the mode for images above 2.5 megapixels (whole mammograms) "
        "where the model is calibrated for it. off (default): one pass, the fastest; flips: 4 "
        "views, +18 AUFROC points over one pass on real films at 3-4x the time "
        "(benchmarks/whole_tta.py); d8: 8 views",
    )
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
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that read images and compute masks while the network runs "
        f"(default min(4, CPUs per rank - 1) = {default_workers()} here; 0 = read in this "
        "process)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the images already in DIR/predictions.csv (of an interrupted or finished run "
        "with the same settings) and predict only the others",
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


def load_detector(
    model_spec: str,
    device: str = "auto",
    cpu_bf16: bool = False,
    tta: str = "off",
    tta_whole: str = "off",
):
    """(detector with .detect(image, mask=, threshold=), metadata, default threshold, path);
    ``tta`` / ``tta_whole``: a GravityNet's test-time augmentation (``Predictor``'s modes; its
    calibrated γ per mode applies where no threshold is passed)."""
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
    from napari_gravity.core.predictor import Predictor

    # the one place a model file becomes a Predictor: its γ, TTA calibrations and area rules
    pred = Predictor.from_file(path, device=dev, cpu_bf16=cpu_bf16, tta=tta, tta_whole=tta_whole)
    return pred, md, float(pred.config.threshold), path


def image_mask(
    path: Path,
    image: np.ndarray,
    mode: str,
    task: str | None,
    fov_source: np.ndarray | None = None,
) -> np.ndarray | None:
    """The tissue / field-of-view mask of an image for ``--mask MODE`` (None = no mask);
    ``fov_source``: a colour photograph's brightest channel (``ImageRecord.fov_source``)."""
    if mode == "none":
        return None
    side = path.with_name(path.stem + ".mask.png")
    if mode in ("auto", "file") and side.is_file():
        from napari_gravity.data.readers import read_image

        return read_image(side).image > 0
    if mode == "file":
        return None
    from napari_gravity.data.masks import tissue_mask

    return tissue_mask(image, mode if mode in ("breast", "fundus") else task, fov_source)


def uninvert(path: Path, image: np.ndarray, task: str | None) -> tuple[np.ndarray, str | None]:
    """``data.masks.upright`` (an MC model's inverted mammogram inverted back), said on stderr;
    ``(image, note)``."""
    from napari_gravity.data.masks import upright

    image, note = upright(image, task)
    if note is not None:
        print(f"gravity predict: {path}: {note}", file=sys.stderr, flush=True)
    return image, note


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


# --------------------------------------------------------------------------- reading
@dataclass
class Loaded:
    """One input as a reader worker hands it over: the image and its mask, or ``error``."""

    index: int
    image_id: str
    path: Path
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: str | None = None
    note: str | None = None  # what was done to the image (reported in its row and on stderr)


def _error_text(path: Path, exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    if str(path) not in text:
        text = f"{path}: {text}"
    return text if len(text) <= 500 else text[:495] + " ..."


class ImageInputs:
    """Map-style data set over the inputs (file paths or data set ``SampleRef``s): item ``k`` is
    a :class:`Loaded` with the image read and its mask computed, or with ``error`` set (never
    an exception: one bad file must not stop a DataLoader)."""

    def __init__(
        self,
        items: list[Any],
        ids: list[str],
        channel: str = "green",
        mask_mode: str = "file",
        task: str | None = None,
    ):
        self.items, self.ids = list(items), list(ids)
        self.channel, self.mask_mode, self.task = channel, mask_mode, task

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Loaded:
        item, iid = self.items[k], self.ids[k]
        p = Path(getattr(item, "path", item))
        note = None
        try:
            if hasattr(item, "load"):  # a data set's SampleRef: its orientation and mask
                sample = item.load()
                image = np.asarray(sample.image, dtype=np.float32)
                mask = sample.mask if self.mask_mode == "auto" else None
                if mask is None:
                    mask = image_mask(p, image, self.mask_mode, self.task)
            else:
                from napari_gravity.data.readers import read_image

                rec = read_image(p, channel=self.channel)
                image, note = uninvert(p, rec.image, self.task)
                mask = image_mask(p, image, self.mask_mode, self.task, rec.fov_source)
        except Exception as exc:  # any reader/mask error is this file's failure, not the run's
            late = _death_notice(exc)
            if late is not None:  # PyTorch's SIGCHLD error raised inside a read: not the file's
                raise late from None
            return Loaded(k, iid, p, error=_error_text(p, exc))
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:  # in a worker: tensors travel through shared memory
            import torch

            image = torch.from_numpy(np.ascontiguousarray(image))
            mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
        return Loaded(k, iid, p, image, mask, note=note)


def _identity(x: Any) -> Any:
    return x


def _is_death_notice(exc: BaseException) -> bool:
    """PyTorch's RuntimeError for a DataLoader worker (reader process) that died."""
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


def _death_notice(exc: BaseException | None) -> BaseException | None:
    """A reader process's death notice among ``exc`` and its causes (a reader that wrapped the
    RuntimeError PyTorch's signal handler raised inside it), else ``None``."""
    seen = 0
    while exc is not None and seen < 8:
        if _is_death_notice(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _worker_died(exc: BaseException) -> bool:
    """A reader process's death as the main process sees it: PyTorch's RuntimeError, or, when
    the death cuts a transfer short, the pipe's ConnectionError / EOFError."""
    return isinstance(exc, (ConnectionError, EOFError)) or _is_death_notice(exc)


def _start_method() -> str:
    import torch.multiprocessing as mp

    return mp.get_start_method(allow_none=True) or mp.get_context().get_start_method()


def _can_share(dataset: ImageInputs) -> bool:
    """Forked workers inherit the data set; spawned ones (macOS, Windows) get it pickled, which
    a data set's ``SampleRef`` (a closure) does not survive."""
    if _start_method() == "fork":
        return True
    import pickle

    try:
        pickle.dumps(dataset)
    except Exception:
        return False
    return True


def iter_inputs(dataset: ImageInputs, indices: list[int], workers: int) -> Iterator[Loaded]:
    """``dataset[k]`` for ``k`` in ``indices``, in that order: read by ``workers`` DataLoader
    processes (a few images ahead of the consumer), or in this process when ``workers`` is 0."""
    workers = min(int(workers), len(indices))
    if workers > 0 and not _can_share(dataset):
        print(
            "gravity predict: these inputs cannot be sent to reader processes started with "
            f"{_start_method()!r} (not 'fork'); reading them in this process",
            file=sys.stderr,
        )
        workers = 0
    if workers <= 0:
        for k in indices:
            yield dataset[k]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,  # type: ignore[arg-type]  (any object with __getitem__/__len__)
        batch_size=None,  # one Loaded per item, no collation
        sampler=indices,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2,
    )
    for rec in loader:
        if rec.image is not None and not isinstance(rec.image, np.ndarray):
            rec.image = rec.image.numpy()
            rec.mask = None if rec.mask is None else rec.mask.numpy()
        yield rec


# --------------------------------------------------------------------------- predicting
def _row(
    iid: str,
    p: Path,
    image_shape,
    det: Detections,
    mask,
    seconds: float,
    threshold=None,
    note: str | None = None,
) -> dict[str, Any]:
    """An image's summary row, with the TTA mode and γ its detections were selected at (a
    Predictor records them: the mode's calibrated γ raised by the area rule, or ``threshold``;
    another detector: ``threshold`` when one was given)."""
    gamma = det.threshold if det.threshold is not None else threshold
    return {
        "image": iid,
        "path": str(p),
        "shape": list(image_shape),
        "detections": len(det),
        "mask_fraction": None if mask is None else float(np.mean(mask)),
        "seconds": seconds,
        **({} if det.tta is None else {"tta": det.tta}),
        **({} if gamma is None else {"threshold": float(gamma)}),
        # resampled to the model's field-of-view scale (core.fov); points stay in image pixels
        **({} if det.zoom == 1.0 else {"zoom": round(float(det.zoom), 4)}),
        **({} if note is None else {"note": note}),
    }


def _failure(iid: str, path: Path, text: str) -> dict[str, Any]:
    """A failure record (reported on stderr): the image is skipped, the run goes on."""
    print(f"gravity predict: skipped {text}", file=sys.stderr, flush=True)
    return {"image": iid, "path": str(path), "error": text}


def predict_stream(
    detector: Any,
    paths: list[Any],
    ids: list[str],
    threshold: float | None,
    channel: str = "green",
    nms_box: float | None = None,
    progress: bool = True,
    batch_size: int = 1,
    mask_mode: str = "file",
    task: str | None = None,
    workers: int = 0,
) -> Iterator[tuple[str, Any]]:
    """Yield ``("image", (image_id, Detections, summary row))`` for each image as soon as its
    detections exist, and ``("failed", {image, path, error})`` for each image that could not
    be read or processed (reported on stderr). Images are read by ``workers`` processes
    (:func:`iter_inputs`); with ``batch_size`` > 1 and a GravityNet ``Predictor``, consecutive
    images of the same size share one forward pass. A reader process that dies raises
    ``RuntimeError`` (:func:`predict_each` then goes on in this process)."""
    from tqdm.auto import tqdm

    dataset = ImageInputs(paths, ids, channel, mask_mode, task)
    batched = batch_size > 1 and hasattr(detector, "raw_batch") and hasattr(detector, "from_raw")
    kwargs: dict[str, Any] = {} if threshold is None else {"threshold": threshold}
    if nms_box is not None:
        kwargs["nms_box"] = nms_box
    pending: list[Loaded] = []

    def flush() -> Iterator[tuple[str, Any]]:
        if not pending:
            return
        t0 = time.perf_counter()
        images, masks = [r.image for r in pending], [r.mask for r in pending]
        try:  # one forward pass per shape; a Predictor post-processes on its device
            if hasattr(detector, "detect_batch"):
                dets = detector.detect_batch(images, masks, **kwargs)
            else:
                raws = detector.raw_batch(images, masks)
                dets = [
                    detector.from_raw(raw, mask=m, **kwargs)
                    for raw, m in zip(raws, masks, strict=True)
                ]
        except (ValueError, MemoryError, RuntimeError) as exc:
            if _worker_died(exc):
                raise
            for r in pending:
                yield "failed", _failure(r.image_id, r.path, _error_text(r.path, exc))
            pending.clear()
            return
        dt = (time.perf_counter() - t0) / len(pending)
        for r, det in zip(pending, dets, strict=True):
            yield (
                "image",
                (
                    r.image_id,
                    det,
                    _row(r.image_id, r.path, r.image.shape, det, r.mask, dt, threshold, r.note),
                ),
            )
        pending.clear()

    with tqdm(total=len(dataset), desc="predict", disable=not progress) as bar:
        for rec in iter_inputs(dataset, list(range(len(dataset))), workers):
            bar.update(1)
            if rec.error is not None:
                yield "failed", _failure(rec.image_id, rec.path, rec.error)
                continue
            if batched:
                if pending and pending[0].image.shape != rec.image.shape:
                    yield from flush()
                pending.append(rec)
                if len(pending) >= batch_size:
                    yield from flush()
                continue
            t0 = time.perf_counter()
            try:
                det = detector.detect(rec.image, mask=rec.mask, **kwargs)
            except (ValueError, MemoryError, RuntimeError) as exc:
                if _worker_died(exc):
                    raise
                yield "failed", _failure(rec.image_id, rec.path, _error_text(rec.path, exc))
                continue
            dt = time.perf_counter() - t0
            row = _row(
                rec.image_id, rec.path, rec.image.shape, det, rec.mask, dt, threshold, rec.note
            )
            yield "image", (rec.image_id, det, row)
        yield from flush()


def predict_each(
    detector: Any,
    paths: list[Any],
    ids: list[str],
    on_image: Callable[[str, Detections, dict[str, Any]], None],
    on_failed: Callable[[dict[str, Any]], None],
    workers: int = 0,
    **kw: Any,
) -> None:
    """:func:`predict_stream` with a callback per event. If a reader process dies (a decoder
    crash, the OOM killer: PyTorch raises that ``RuntimeError`` wherever the main thread is,
    possibly inside a callback), the images whose callback has not returned are predicted
    again, read in this process; a callback may thus see an image twice."""
    handled: set[str] = set()

    def go(idx: list[int], n_workers: int) -> None:
        for kind, ev in predict_stream(
            detector, [paths[k] for k in idx], [ids[k] for k in idx], workers=n_workers, **kw
        ):
            if kind == "image":
                on_image(*ev)
                handled.add(ev[0])
            else:
                on_failed(ev)
                handled.add(ev["image"])

    deaths: list[BaseException] = []
    said: list[bool] = []  # the stderr notice, once

    def recoverable(exc: BaseException) -> bool:
        return workers > 0 and _worker_died(exc) and len(deaths) < 3

    # The death may surface twice: a broken pipe first, then PyTorch's SIGCHLD error, which a
    # signal handler raises wherever this process is — even inside the handling of the first.
    # So every step after a death runs inside a try, and each notice just counts.
    while True:
        try:
            try:
                if deaths:
                    todo = [k for k, i in enumerate(ids) if i not in handled]
                    if not said:
                        said.append(True)
                        print(
                            f"gravity predict: a reader process died ({str(deaths[0])[:200]}); "
                            f"reading the other {len(todo)} image(s) in this process",
                            file=sys.stderr,
                            flush=True,
                        )
                    go(todo, 0)
                else:
                    go(list(range(len(paths))), workers)
                return
            except (RuntimeError, ConnectionError, EOFError) as exc:
                if not recoverable(exc):
                    raise
                deaths.append(exc)
        except (RuntimeError, ConnectionError, EOFError) as late:  # a notice during the above
            if late in deaths or not recoverable(late):
                raise
            deaths.append(late)


def predict_paths(
    detector: Any,
    paths: list[Path],
    ids: list[str],
    threshold: float | None,
    channel: str = "green",
    nms_box: float | None = None,
    progress: bool = True,
    batch_size: int = 1,
    mask_mode: str = "file",
    task: str | None = None,
    failures_out: list[dict[str, Any]] | None = None,
    workers: int = 0,
) -> tuple[dict[str, Detections], list[dict[str, Any]]]:
    """Detections per image id, and one summary row per image (:func:`predict_each`,
    collected). An image that cannot be read or processed is skipped, reported on stderr and
    appended to ``failures_out`` (``{image, path, error}``); the other images go on."""
    preds: dict[str, Detections] = {}
    rows: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}

    def on_image(iid: str, det: Detections, row: dict[str, Any]) -> None:
        preds[iid], rows[iid] = det, row

    predict_each(
        detector,
        paths,
        ids,
        on_image,
        lambda f: failures.__setitem__(f["image"], f),
        workers,
        threshold=threshold,
        channel=channel,
        nms_box=nms_box,
        progress=progress,
        batch_size=batch_size,
        mask_mode=mask_mode,
        task=task,
    )
    if failures_out is not None:
        failures_out.extend(failures.values())
    return preds, list(rows.values())


def _fail(failures: list[dict[str, Any]], iid: str, path: Path, exc: BaseException) -> None:
    """Record (and report on stderr) an image that could not be processed; the run goes on."""
    failures.append(_failure(iid, path, _error_text(path, exc)))


# --------------------------------------------------------------------------- streamed state
def _fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a model file (hex, first 16 digits)."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def _csv_lines(iid: str, det: Detections) -> list[str]:
    """The rows of one image exactly as ``write_predictions_csv`` writes them."""
    from napari_gravity.evaluation.io import _check_id, _q

    _check_id(iid)
    if len(det) == 0:
        return [f"{_q(iid)},,,"]
    return [
        f"{_q(iid)},{y:.3f},{x:.3f},{s:.6g}"
        for (y, x), s in zip(det.points.tolist(), det.scores.tolist(), strict=True)
    ]


def _write_all(fd: int, text: str) -> None:
    data = text.encode("utf-8")
    while data:
        data = data[os.write(fd, data) :]


class _Stream:
    """Appends each image's journal line (its summary row and its CSV rows), then its CSV rows,
    as soon as the image is done.

    Neither file is written atomically as a whole (that is the point). Each image is one
    ``os.write`` per file (``O_APPEND``), so a crash (``kill -9``, Ctrl-C) leaves whole lines: the
    CSV is readable, at most one image behind the journal. The journal is what ``--resume`` and
    the final merge trust (an image whose journal line is missing or torn, e.g. after a power
    loss, is predicted again); the final ``predictions.csv`` is rebuilt from it."""

    def __init__(self, csv_path: Path, journal_path: Path, fresh_settings: dict | None):
        from napari_gravity.fileio import atomic_write_text

        if fresh_settings is not None:
            atomic_write_text(csv_path, CSV_HEADER + "\n")
            atomic_write_text(journal_path, _jline({"kind": "settings", **fresh_settings}))
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0)
        self._csv = os.open(csv_path, flags)
        self._journal = os.open(journal_path, flags)

    def image(self, iid: str, det: Detections, row: dict[str, Any]) -> None:
        lines = _csv_lines(iid, det)
        _write_all(self._journal, _jline({"kind": "image", **row, "lines": lines}))
        _write_all(self._csv, "".join(line + "\n" for line in lines))

    def record(self, kind: str, rec: dict[str, Any]) -> None:
        _write_all(self._journal, _jline({"kind": kind, **rec}))

    def close(self) -> None:
        for fd in (self._csv, self._journal):
            os.close(fd)


def _jline(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def _part_names(out: Path) -> list[Path]:
    return sorted(out.glob("predictions.rank*.csv")) + sorted(out.glob("predict_state.rank*.jsonl"))


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of a text file (a torn last line is left out)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return lines[:-1]  # the piece after the last newline is '' or torn


@dataclass
class _State:
    settings: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]  # image id -> summary row
    failures: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    done: dict[str, list[str]]  # image id -> its CSV lines (complete and counted)
    found: bool  # any earlier output in the folder

    def check(self, settings: dict[str, Any], out: Path) -> None:
        now = json.loads(json.dumps(settings))
        for old in self.settings:
            diff = [k for k in sorted(set(now) | set(old)) if now.get(k) != old.get(k)]
            if diff:
                what = ", ".join(f"{k}: {old.get(k)!r} then, {now.get(k)!r} now" for k in diff)
                raise PredictError(
                    f"--resume: {out} holds predictions made with other settings ({what}); "
                    "use the same settings, or another --out / no --resume to start again"
                )
        for spec, m in self.models.items():  # the same model files (a registry NAME moves on)
            if not isinstance(m.get("sha256"), str):
                continue
            from napari_gravity.core.registry import resolve_model

            try:
                path = resolve_model(spec)
                same = str(path) == m["path"] and _fingerprint(path) == m["sha256"]
            except (ValueError, OSError):
                same = False
            if not same:
                raise PredictError(
                    f"--resume: {out} holds predictions of {spec} = {m['path']} "
                    f"(sha256 {m['sha256']}), which is not the model {spec} names now; "
                    "use another --out or no --resume to start again"
                )
        if self.found and not self.settings:
            raise PredictError(
                f"--resume: {out} holds no resumable state ({STATE_NAME} or a {SUMMARY_NAME} "
                "with 'settings'); run without --resume to predict every image again"
            )


def _read_state(out: Path, ids: list[str]) -> _State:
    """What an earlier (interrupted or finished) run left in ``out``: its settings, the summary
    rows of the images it finished, failures, models, and the CSV rows of every image whose row
    count matches its summary row."""
    settings: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    found = False
    summary = out / SUMMARY_NAME
    if summary.is_file():
        found = True
        try:
            s = json.loads(summary.read_text())
        except (ValueError, OSError):
            s = {}
        if isinstance(s, dict) and isinstance(s.get("settings"), dict):
            settings.append(s["settings"])
            for r in _dicts(s.get("images")):
                if _is_record(r):
                    records[r["image"]] = r
            for f in _dicts(s.get("failed")):
                if isinstance(f.get("image"), str):
                    failures[f["image"]] = f
            m_all = s.get("models")
            for spec, m in m_all.items() if isinstance(m_all, dict) else ():
                if _is_model({"spec": spec, **m} if isinstance(m, dict) else {}):
                    models[spec] = {"spec": spec, **m}
    journals = [out / STATE_NAME, *sorted(out.glob("predict_state.rank*.jsonl"))]
    for j in journals:
        for line in _complete_lines(j):
            found = True
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            kind = rec.pop("kind", None) if isinstance(rec, dict) else None
            if kind == "settings":
                settings.append(rec)
            elif kind == "image" and _is_record(rec):
                records[rec["image"]] = rec
                failures.pop(rec["image"], None)
            elif kind == "failed" and isinstance(rec.get("image"), str):
                failures[rec["image"]] = rec
            elif kind == "model" and _is_model(rec):
                models[rec["spec"]] = rec
    candidates: dict[str, list[list[str]]] = {}
    for f in [out / CSV_NAME, *sorted(out.glob("predictions.rank*.csv"))]:
        lines = _complete_lines(f)
        found = found or any(line.strip() for line in lines[1:])
        per_file: dict[str, list[str]] = {}
        for line in lines[1:]:  # after the header
            if not line.strip():
                continue
            try:
                fields = next(csv.reader([line]))
            except (csv.Error, StopIteration):
                continue
            if fields:
                per_file.setdefault(fields[0], []).append(line)
        for iid, ls in per_file.items():
            candidates.setdefault(iid, []).append(ls)
    done: dict[str, list[str]] = {}
    for iid in ids:
        rec = records.get(iid)
        if rec is None:
            continue
        # a journal line carries the image's rows; a finished run's summary row does not:
        # its rows are those in a CSV, if they are all there
        options = [rec["lines"]] if isinstance(rec.get("lines"), list) else candidates.get(iid, [])
        for ls in options:
            if _n_detections(ls) == rec.get("detections") and ls:
                done[iid] = ls
                break
    return _State(settings, records, failures, models, done, found)


def _dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _is_model(m: dict[str, Any]) -> bool:
    thr = m.get("threshold")
    return (
        isinstance(m.get("spec"), str)
        and isinstance(m.get("path"), str)
        and isinstance(thr, (int, float))
        and not isinstance(thr, bool)
    )


def _is_record(r: dict[str, Any]) -> bool:
    """A summary row / journal image line as this module writes them."""
    lines = r.get("lines", [])
    return (
        isinstance(r.get("image"), str)
        and isinstance(r.get("detections"), int)
        and isinstance(lines, list)
        and all(isinstance(x, str) and "\n" not in x for x in lines)
    )


def _n_detections(lines: list[str]) -> int | None:
    """Rows with coordinates among an image's CSV lines (None: an unreadable line)."""
    n = 0
    for line in lines:
        try:
            fields = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            return None
        n += len(fields) > 1 and fields[1] != ""
    if n == 0 and len(lines) != 1:
        return None  # an image without detections has exactly one 'image,,,' row
    return n


def _state_text(settings: dict[str, Any], st: _State, done_ids: list[str]) -> str:
    lines = [_jline({"kind": "settings", **settings})]
    lines += [_jline({"kind": "model", **m}) for m in st.models.values()]
    lines += [_jline({"kind": "image", **st.records[i], "lines": st.done[i]}) for i in done_ids]
    return "".join(lines)


def _csv_text(st: _State, done_ids: list[str]) -> str:
    return CSV_HEADER + "\n" + "".join(line + "\n" for i in done_ids for line in st.done[i])


def _remove(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def prepare_output(out: Path, ids: list[str], settings: dict[str, Any], resume: bool) -> set[str]:
    """Set ``out`` up for a run and return the ids already done. Without ``resume`` every
    earlier output is cleared; with it the earlier run's finished images are kept (consolidated
    into ``predictions.csv`` + ``predict_state.jsonl``, rewritten atomically)."""
    from napari_gravity.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        _remove([out / SUMMARY_NAME, out / STATE_NAME, *_part_names(out)])
        atomic_write_text(out / STATE_NAME, _jline({"kind": "settings", **settings}))
        atomic_write_text(out / CSV_NAME, CSV_HEADER + "\n")
        return set()
    st = _read_state(out, ids)
    st.check(settings, out)
    done_ids = [i for i in ids if i in st.done]
    # journal first: a crash between the two writes leaves records whose rows are still found
    atomic_write_text(out / STATE_NAME, _state_text(settings, st, done_ids))
    atomic_write_text(out / CSV_NAME, _csv_text(st, done_ids))
    _remove([out / SUMMARY_NAME, *_part_names(out)])
    return set(done_ids)


# --------------------------------------------------------------------------- the command
def _device_kind(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(device).startswith("cuda") else "cpu"


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not (0.0 <= args.threshold <= 1.0):
        raise PredictError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.nms_box is not None and not (math.isfinite(args.nms_box) and args.nms_box > 0):
        raise PredictError(
            f"--nms-box must be a positive number of pixels, got {args.nms_box:g} "
            "(it is the side of the non-maximum-suppression box; omit it for the model's)"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {args.batch_size}")
    workers = default_workers() if getattr(args, "workers", None) is None else int(args.workers)
    if workers < 0:
        raise PredictError(f"--workers must be >= 0, got {workers}")
    if args.format:
        from napari_gravity.data.datasets import open_dataset

        paths = [r for root in args.inputs for r in open_dataset(root, format=args.format)]
        ids = [r.image_id for r in paths]
        if not paths:
            raise PredictError(f"no {args.format} images in {', '.join(args.inputs)}")
    else:
        paths = collect_images(args.inputs)
        ids = image_ids(paths)
    from training.distributed import barrier, cleanup, setup_distributed

    kind = _device_kind(args.device)
    info = setup_distributed(kind)
    device = f"cuda:{info.local_rank}" if info.enabled and kind == "cuda" else args.device
    try:
        rc = _run(args, paths, ids, device, workers, info)
        barrier(info)  # every rank leaves together
    finally:
        cleanup(info)
    if info.initialised_here:
        # a torchrun rank ends here, its files written and closed: leaving through the C++
        # static destructors of gloo's threads sometimes aborts the process ("terminate called
        # without an active exception", exit -6, about 1 run in 20 here) after the work is done
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _run(args, paths: list[Any], ids: list[str], device: str, workers: int, info) -> int:
    from training.distributed import barrier, broadcast_object

    out = Path(args.out)
    t0 = time.time()
    settings = {
        "model": args.model,
        "threshold": args.threshold,
        "nms_box": args.nms_box,
        "mask": args.mask,
        "channel": args.channel,
        "format": args.format,
    }
    if args.tta != "auto":  # only when set: runs made before the flag existed still resume
        settings["tta"] = args.tta
    if args.tta_whole != "off":  # likewise
        settings["tta_whole"] = args.tta_whole
    if args.bf16:  # only when set: runs made before the flag existed still resume
        settings["bf16"] = True
    # 1. rank 0 prepares the folder (clears it, or consolidates what an earlier run left)
    msg: tuple[str | None, list[str]] = (None, [])
    if info.is_main:
        try:
            msg = (None, sorted(prepare_output(out, ids, settings, bool(args.resume))))
        except (PredictError, OSError) as exc:
            msg = (str(exc), [])
    err, done_list = broadcast_object(msg, info)
    if err is not None:
        raise PredictError(err)
    done = set(done_list)
    if done:
        print(f"gravity predict: --resume: {len(done)} image(s) already done", file=sys.stderr)
    todo = [k for k, i in enumerate(ids) if i not in done]
    mine = todo[info.rank :: info.world_size]
    m_paths, m_ids = [paths[k] for k in mine], [ids[k] for k in mine]
    # 2. every rank predicts its shard, streaming to its files
    if info.enabled:
        r = info.rank
        stream = _Stream(
            out / f"predictions.rank{r}.csv", out / f"predict_state.rank{r}.jsonl", settings
        )
    else:
        stream = _Stream(out / CSV_NAME, out / STATE_NAME, None)
    progress = (
        not args.no_progress and os.environ.get("GRAVITY_NO_PROGRESS") != "1" and info.is_main
    )
    try:
        groups: dict[str | None, tuple[list[Any], list[str]]] = {}
        if m_paths:
            groups = (
                route_default(m_paths, m_ids)
                if args.model == "default"
                else {None: (m_paths, m_ids)}
            )
        for task, (g_paths, g_ids) in groups.items():
            spec = args.model if task is None else f"default_{task}"
            detector, md, thr, model_path = load_detector(
                spec, device, args.bf16, args.tta, args.tta_whole
            )
            threshold = float(args.threshold) if args.threshold is not None else thr
            tta_params = getattr(detector, "tta_params", None) or {}
            # a GravityNet picks γ per image (its TTA mode's, raised by the area rule on an
            # image larger than its validation images) unless --threshold names one
            per_image = args.threshold is None and hasattr(detector, "params_for")
            if args.tta in AVERAGED and per_image and args.tta not in tta_params:
                print(
                    f"gravity predict: {model_path} is not calibrated for --tta {args.tta}: its "
                    "one-pass γ applies to the averaged views (gravity calibrate MODEL DATA "
                    "--out NEW calibrates it)",
                    file=sys.stderr,
                )
            stream.record(
                "model",
                {
                    "spec": spec,
                    "path": str(model_path),
                    "sha256": _fingerprint(model_path),
                    "name": md.get("name"),
                    "task": md.get("task"),
                    "threshold": threshold,
                    "tta": args.tta,
                    "tta_thresholds": {m: p["threshold"] for m, p in tta_params.items()},
                    # modes whose γ rises on images larger than the validation images
                    "area_rule": sorted(getattr(detector, "area_rules", None) or {}),
                },
            )

            def on_image(iid, det, row, spec=spec):
                stream.image(iid, det, {**row, "model": spec})

            predict_each(
                detector,
                g_paths,
                g_ids,
                on_image,
                lambda f: stream.record("failed", f),
                workers,
                threshold=None if per_image else threshold,
                channel=args.channel,
                nms_box=args.nms_box,
                progress=progress,
                batch_size=max(1, int(args.batch_size)),
                mask_mode=args.mask,
                task=md.get("task"),
            )
    finally:
        stream.close()
    # 3. rank 0 merges every rank's files into the final predictions.csv and summary.json
    barrier(info)
    rc = 1
    if info.is_main:
        try:
            rc = _finish(args, out, ids, settings, t0, workers, info.world_size, len(done))
        finally:
            broadcast_object(rc, info)
    else:
        rc = broadcast_object(rc, info)
    return rc


def _finish(args, out, ids, settings, t0, workers, world, n_resumed) -> int:
    from napari_gravity.evaluation.io import read_predictions_csv
    from napari_gravity.fileio import atomic_write_text

    st = _read_state(out, ids)
    done_ids = [i for i in ids if i in st.done]
    csv_path = atomic_write_text(out / CSV_NAME, _csv_text(st, done_ids))
    rows = [{k: v for k, v in st.records[i].items() if k != "lines"} for i in done_ids]
    failures = [
        {k: st.failures[i][k] for k in ("image", "path", "error")}
        for i in ids
        if i in st.failures and i not in st.done
    ]
    missing = [i for i in ids if i not in st.done and i not in st.failures]
    for i in missing:  # cannot happen in a complete run; never silently lose an image
        failures.append({"image": i, "path": "", "error": f"{i}: no result (a rank stopped?)"})
    models = st.models
    if not models:
        raise PredictError(f"{out}: no model was recorded")
    used = {
        spec: {
            "path": m["path"],
            "task": m.get("task"),
            "threshold": m.get("threshold"),
            "tta": m.get("tta"),
            "tta_thresholds": m.get("tta_thresholds"),
            "area_rule": m.get("area_rule"),
            "name": m.get("name"),
            "sha256": m.get("sha256"),
        }
        for spec, m in models.items()
    }
    first = next(iter(models.values()))
    secs = [r["seconds"] for r in rows]
    summary: dict[str, Any] = {
        "model": first["path"],
        "model_name": first.get("name"),
        "threshold": first.get("threshold"),
        "mask": args.mask,
        "task": first.get("task"),
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
    summary["settings"] = settings
    summary["pipeline"] = {"workers": workers, "world_size": world, "resumed_images": n_resumed}
    if args.evaluate and done_ids:
        preds = read_predictions_csv(csv_path)
        summary["evaluation"] = evaluate_predictions(
            preds, args.evaluate, out / "evaluation", done_ids
        )
    atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2))
    _remove([out / STATE_NAME, *_part_names(out)])
    gammas = [r["threshold"] for r in rows if r.get("threshold") is not None]
    if gammas and max(gammas) - min(gammas) > 1e-6:  # per image: TTA mode and area rule
        modes = sorted({str(r.get("tta")) for r in rows if r.get("tta")})
        at = f"{', '.join(used)} at γ {min(gammas):.3f}-{max(gammas):.3f} per image" + (
            f" ({'/'.join(modes)})" if modes else ""
        )
    elif gammas:
        at = (
            ", ".join(used)
            + f" at threshold {gammas[0]:.3f}"
            + (f" ({rows[0]['tta']})" if rows and rows[0].get("tta") else "")
        )
    else:
        at = ", ".join(f"{k} at threshold {v['threshold']:.3f}" for k, v in used.items())
    zoomed = [r["zoom"] for r in rows if r.get("zoom")]
    if zoomed:
        at += (
            f"; {len(zoomed)} image(s) resampled to the model's field-of-view scale "
            f"(×{min(zoomed):.2f}-{max(zoomed):.2f})"
        )
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
            f"gravity predict: error: {len(failures)} of {len(ids)} image(s) failed "
            f"(listed in {out / SUMMARY_NAME} under 'failed')",
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
