"""The training loop: tiles → loss → Adam, validation FROC every epoch, best model kept.

``train(cfg, run_dir, ...)`` is what ``gravity train`` runs (one process, or one per GPU under
``torchrun``). It is built from small pieces: :class:`TrainState` (the resume checkpoint),
:func:`build_optimisation`, :func:`train_epoch`, :func:`validate_and_keep_best`, :func:`export`
and the orchestrator ``_train``. Paper defaults: Adam lr 1e-4, ReduceLROnPlateau(factor 0.1, patience 3) on the
validation AUFROC, λ = 10, flips. Validation runs the core Predictor (the prediction code path)
on whole validation images and scores them with the evaluation package's FROC; the best epoch by
AUFROC_γ is kept and exported as ``RUN_DIR/model.safetensors`` with the operating threshold
chosen on validation at ``eval.target_fppi``.

Files in RUN_DIR: ``config.yaml`` (resolved config), ``events.jsonl``, ``metrics.csv``,
``checkpoint.pt`` (resume state, written atomically), ``best.safetensors`` (best so far),
``model.safetensors`` (final), ``froc_best.png`` + ``froc_best.json``, ``tensorboard/`` (optional).
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import io
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from napari_gravity.core.predictor import resolve_device
from napari_gravity.fileio import atomic_write_text
from training import checkpoint as ckpt
from training import data as tdata
from training import distributed as tdist
from training.abort import TrainingAborted, check_abort
from training.config import OptimConfig, TrainConfig
from training.events import EventLog
from training.models import build_adapter, file_sha256
from training.validate import ValResult, detect_all, score

log = logging.getLogger("training")

REPO_ROOT = Path(__file__).resolve().parent.parent


class TrainingError(RuntimeError):
    """Training could not run (the message says why)."""


@dataclass
class TrainResult:
    model_path: Path | None
    best_val_aufroc: float
    best_epoch: int
    threshold: float
    stopped: bool
    epochs_run: int
    registered: str | None = None
    history: list[dict[str, Any]] | None = None
    last_state: dict[str, torch.Tensor] | None = None  # weights after the last step (CPU)


# --------------------------------------------------------------------------- helpers


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop stops after the current step, saving a checkpoint."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._old: dict[int, Any] = {}

    def set(self) -> None:
        self._flag.set()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if self._flag.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: give up at once
            self._flag.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        self._old.clear()


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return resolve_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise TrainingError(f"--device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


@functools.cache
def git_commit() -> str | None:
    """The commit of the code this process runs: read once, when training starts (a commit made
    while a run goes on does not change its provenance)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def set_seed(seed: int, deterministic: bool = False) -> None:
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _set_bn_eval(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys: list[str] = []
    for row in history:
        for k in row:
            if k not in keys and not isinstance(row[k], (dict, list)):
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in keys})
    atomic_write_text(path, buf.getvalue())


def _plot_froc(run_dir: Path, curve: dict[str, Any], label: str) -> Path | None:
    """FROC plot of the best epoch (evaluation's plots module) + the curve as JSON."""
    atomic_write_text(run_dir / "froc_best.json", json.dumps(curve))
    try:
        from napari_gravity.evaluation.plots import plot_froc

        rep = {
            "method": label,
            "aufroc": curve["aufroc"],
            "fppi": curve["fppi"],
            "tpr": curve["tpr"],
            "max_fppi": curve["max_fppi"],
        }
        paths = plot_froc(
            [rep], run_dir / "froc_best", formats=("png",), title=f"validation FROC: {label}"
        )
        return paths[0] if paths else None
    except Exception as exc:  # a plot must never break training
        log.warning("could not plot the FROC curve: %s", exc)
        return None


def _tb_writer(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        log.warning("train.tensorboard: TensorBoard is not installed; skipping")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _amp_context(device: torch.device, mode: str):
    if device.type != "cuda" or mode == "off":
        return nullcontext(), None
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype), mode


# --------------------------------------------------------------------------- state & pieces


@dataclass
class TrainState:
    """Where a run stands: the next (epoch, step), the best epoch so far and the history.

    With the weights, optimiser, schedule, scaler and RNG states it is the resume checkpoint
    (:meth:`to_checkpoint` / :meth:`from_checkpoint`, the keys of ``checkpoint.pt``)."""

    next_epoch: int = 1
    next_step: int = 0  # steps of ``next_epoch`` already done
    best_aufroc: float = -1.0
    best_epoch: int = 0
    best_threshold: float = 1.0
    best_curve: dict[str, Any] | None = None
    no_improve: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] | None = None  # RNG state to restore when the next epoch starts

    def to_checkpoint(
        self, model: torch.nn.Module, optim: Optimisation, config: dict[str, Any]
    ) -> dict[str, Any]:
        """The checkpoint dict (tensors, numbers, strings: loads with ``weights_only=True``);
        the RNG state is taken now."""
        return {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optim.optimizer.state_dict(),
            "scheduler": optim.scheduler.state_dict(),
            "scaler": optim.scaler.state_dict() if optim.scaler is not None else {},
            "next_epoch": self.next_epoch,
            "next_step": self.next_step,
            "best_aufroc": self.best_aufroc,
            "best_epoch": self.best_epoch,
            "best_threshold": self.best_threshold,
            "best_curve": self.best_curve,
            "no_improve": self.no_improve,
            "history": self.history,
            "config": json.dumps(config),
            "rng": ckpt.rng_state(),
        }

    @classmethod
    def from_checkpoint(
        cls,
        state: dict[str, Any],
        model: torch.nn.Module | None = None,
        optim: Optimisation | None = None,
    ) -> TrainState:
        """Read a checkpoint dict; load its weights / optimiser states into ``model`` /
        ``optim`` when given."""
        if model is not None:
            model.load_state_dict(state["model"])
        if optim is not None:
            optim.optimizer.load_state_dict(state["optimizer"])
            optim.scheduler.load_state_dict(state["scheduler"])
            if optim.scaler is not None and state.get("scaler"):
                optim.scaler.load_state_dict(state["scaler"])
        return cls(
            next_epoch=int(state["next_epoch"]),
            next_step=int(state["next_step"]),
            best_aufroc=float(state["best_aufroc"]),
            best_epoch=int(state["best_epoch"]),
            best_threshold=float(state.get("best_threshold", 1.0)),
            best_curve=state.get("best_curve"),
            no_improve=int(state["no_improve"]),
            history=list(state.get("history", [])),
            rng=state.get("rng"),
        )


@dataclass
class Optimisation:
    """The optimiser, the plateau LR schedule and (fp16 AMP only) the gradient scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler | None = None

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def build_optimisation(
    model: torch.nn.Module, t: OptimConfig, amp_mode: str | None = None
) -> Optimisation:
    """Adam / AdamW / SGD on ``model``'s parameters, ReduceLROnPlateau(mode=max) on the
    validation AUFROC, and a GradScaler for fp16 autocast."""
    if t.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
    else:
        kind = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        opt = kind(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=t.lr_factor, patience=t.lr_patience, min_lr=t.min_lr
    )
    scaler = torch.amp.GradScaler("cuda") if amp_mode == "fp16" else None
    return Optimisation(opt, sched, scaler)


def epoch_plan(
    n_images: int, cfg: TrainConfig, epoch: int, steps_per_epoch: int, skip: int = 0
) -> list[tuple[int, int]]:
    """The (image, tile seed) items of ``epoch``'s steps ``skip+1 ..``: the epoch's shuffled
    items, repeated to fill ``steps_per_epoch`` global batches, without the first ``skip``
    batches (a resumed epoch never loads the tiles it already trained on)."""
    g = cfg.train.batch_size
    items = tdata.epoch_items(n_images, cfg.data.tiles_per_image, cfg.train.seed, epoch)
    need = steps_per_epoch * g
    if len(items) < need:
        items = items * math.ceil(need / len(items))
    return items[skip * g : need]


@dataclass
class Run:
    """What stays fixed during a run (built once by :func:`_prepare`)."""

    cfg: TrainConfig
    run_dir: Path
    dev: torch.device
    dist: tdist.DistInfo
    events: EventLog
    stop: StopFlag
    adapter: Any
    model: torch.nn.Module  # the bare model
    net: torch.nn.Module  # what the step calls: the model, or DDP around it
    optim: Optimisation
    amp_ctx: Any
    amp_mode: str | None
    channels_last: bool
    n_train: int
    val_imgs: list[tdata.Prepared]
    n_val: int
    data_description: dict[str, Any]
    loader: torch.utils.data.DataLoader
    batches: tdata.EpochBatches
    generator: torch.Generator
    steps_per_epoch: int
    n_epochs: int
    progress: bool
    init_path: Path | None = None
    parent_hash: str | None = None
    tb: Any = None

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def save_checkpoint(self, state: TrainState) -> None:
        """``checkpoint.pt`` (rank 0; atomic)."""
        if self.main:
            ckpt.save_checkpoint(
                self.run_dir / "checkpoint.pt",
                state.to_checkpoint(self.model, self.optim, self.cfg.to_dict()),
            )

    def metadata(self, epochs_done: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """The model file's metadata: name, task, provenance (commit, data, config, parent)."""
        pm = getattr(self.adapter, "parent_metadata", {}) or {}
        parent = None
        if self.init_path is not None:
            parent = {
                "path": str(self.init_path.resolve()),
                "sha256": self.parent_hash,
                "date": (pm.get("provenance") or {}).get("date"),
                "name": pm.get("name"),
            }
        task = self.cfg.task or pm.get("task")
        fov = None  # the FOV diameter the images were drawn at (napari_gravity.core.fov)
        if task == "ma" and (self.cfg.data.synthetic or self.cfg.data.format == "eophtha"):
            from napari_gravity.data.synthetic.fundus import FOV_PX

            fov = FOV_PX  # every fundus recipe draws at it; the E-ophtha reader resizes to it
        return {
            "name": self.cfg.name or self.run_dir.name,
            "model": self.cfg.model,
            "task": task,
            **({"fov_diameter_px": fov} if fov else {}),
            "provenance": {
                "commit": git_commit(),
                "data": self.data_description,
                "config": self.cfg.to_dict(),
                "epochs": epochs_done,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "parent": parent,
                "world_size": self.dist.world_size,
                "device": str(self.dev),
            },
            "metrics": metrics or {},
        }


@dataclass
class EpochResult:
    """What one pass of :func:`train_epoch` did."""

    steps: int = 0  # steps run in this call
    last_step: int = 0  # the epoch's step reached (1-based; a resumed epoch starts later)
    loss: float = 0.0  # sums over the steps run
    cls: float = 0.0
    reg: float = 0.0
    images: int = 0  # tiles seen by all processes
    seconds: float = 0.0
    stopped: bool = False

    def mean(self, what: str) -> float:
        return getattr(self, what) / max(self.steps, 1)


def _step(run: Run, images: torch.Tensor, targets: list[torch.Tensor], gstep: int) -> dict:
    """One optimisation step on one batch; returns the adapter's loss dict (``loss`` as float)."""
    t, opt, scaler = run.cfg.train, run.optim.optimizer, run.optim.scaler
    images = images.to(run.dev, non_blocking=True)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = [x.to(run.dev) for x in targets]
    if t.warmup_steps and gstep < t.warmup_steps:
        for g in opt.param_groups:
            g["lr"] = t.lr * (gstep + 1) / t.warmup_steps
    with run.amp_ctx:
        out = run.adapter.losses(run.net, images, targets)
    loss = out["loss"].float()
    if run.dist.enabled and out.get("n_pos") is not None:
        # The loss is normalised by the positives of the WHOLE global batch, exactly as a single
        # process with the same global batch would (DDP averages gradients).
        n_local = float(out["n_pos"])
        n_total = tdist.all_reduce_sum(n_local, run.dist, run.dev)
        loss = loss * (max(1.0, n_local) * run.dist.world_size / max(1.0, n_total))
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if t.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return {**out, "loss": float(loss.detach()), "n_images": images.shape[0]}


def train_epoch(run: Run, state: TrainState, epoch: int) -> EpochResult:
    """Train ``epoch`` from step ``state.next_step`` until its end or a stop request; writes the
    ``checkpoint_every`` checkpoints and, when stopped mid-epoch, the stop checkpoint."""
    from tqdm.auto import tqdm

    t, spe, res = run.cfg.train, run.steps_per_epoch, EpochResult()
    skip = state.next_step
    run.net.train()
    if t.freeze_bn:
        _set_bn_eval(run.model)
    run.batches.set_items(epoch_plan(run.n_train, run.cfg, epoch, spe, skip))
    # the loader's own generator: starting the iterator draws no number from the global RNG
    run.generator.manual_seed(t.seed * 1000 + epoch)
    if state.rng is not None:  # a resumed run: the random stream continues where it stopped
        ckpt.set_rng_state(state.rng)
        state.rng = None
    bar = tqdm(
        total=spe,
        initial=skip,
        desc=f"epoch {epoch}/{run.n_epochs}",
        disable=not (run.progress and run.main),
        leave=False,
    )
    last_emit, t0, step = 0.0, time.time(), skip
    for step, (images, targets) in enumerate(run.loader, start=skip + 1):
        gstep = (epoch - 1) * spe + step - 1
        out = _step(run, images, targets, gstep)
        lv = out["loss"]
        if not math.isfinite(lv):
            raise TrainingError(f"epoch {epoch} step {step}: the loss is {lv}; lower train.lr")
        res.loss += lv
        res.cls += float(out["cls"])
        res.reg += float(out["reg"])
        res.steps += 1
        res.images += out["n_images"] * run.dist.world_size
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4f}")
        now = time.time()
        if run.main and (now - last_emit >= 0.5 or step == spe):
            last_emit = now
            run.events.emit(
                "step",
                epoch=epoch,
                step=step,
                steps_per_epoch=spe,
                loss=lv,
                cls=float(out["cls"]),
                reg=float(out["reg"]),
                lr=run.optim.lr,
            )
        if run.tb is not None:
            run.tb.add_scalar("train/loss", lv, gstep)
        check_abort(run.run_dir, f"epoch {epoch} step {step}")
        stop_now = run.stop.is_set()
        if run.dist.enabled:
            stop_now = tdist.all_reduce_sum(float(stop_now), run.dist, run.dev) > 0
        if stop_now:
            res.stopped = True
            break
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < spe:
            state.next_step = step
            run.save_checkpoint(state)
        if step >= spe:
            break
    bar.close()
    res.last_step, res.seconds = step, time.time() - t0
    if res.stopped and step < spe:
        state.next_step = step
        run.save_checkpoint(state)
    return res


def _froc_curve(val: ValResult, epoch: int, max_fppi: float) -> dict[str, Any] | None:
    if val.froc is None:
        return None
    return {
        "fppi": [float(x) for x in val.froc.fppi],
        "tpr": [float(x) for x in val.froc.tpr],
        "thresholds": [float(x) if math.isfinite(x) else None for x in val.froc.thresholds],
        "aufroc": float(val.summary()["aufroc"]),
        "max_fppi": max_fppi,
        "epoch": epoch,
    }


def validate_and_keep_best(run: Run, state: TrainState, epoch: int) -> dict[str, Any] | None:
    """Validate on rank 0 (when ``eval.every`` says so), share the result, step the LR
    schedule and, on an improvement, update ``state`` and write ``best.safetensors``.
    Returns the validation summary (None when this epoch does not validate)."""
    e = run.cfg.eval
    if not (epoch % e.every == 0 or epoch == run.n_epochs):
        return None
    val: ValResult | None = None
    summary: dict[str, Any] | None = None
    if run.main:
        run.model.eval()
        with torch.no_grad(), run.amp_ctx:
            dets = detect_all(
                run.adapter.detector(run.dev), run.val_imgs, e.min_score, run.progress
            )
        val = score(dets, run.val_imgs, e.max_fppi, e.target_fppi)
        summary = val.summary()
    summary = tdist.broadcast_object(summary, run.dist)
    auc = float(summary["aufroc"])
    run.optim.scheduler.step(auc)
    # without validation lesions the AUFROC is undefined (0): keep the latest weights instead
    if not (auc > state.best_aufroc or int(summary.get("n_lesions", 1)) == 0):
        state.no_improve += 1
        return summary
    state.best_aufroc, state.best_epoch, state.no_improve = auc, epoch, 0
    state.best_threshold = float(
        summary["threshold_at_target"] if e.fixed_threshold is None else e.fixed_threshold
    )
    if run.main and val is not None:
        state.best_curve = _froc_curve(val, epoch, e.max_fppi) or state.best_curve
        path = run.adapter.save(
            run.run_dir / "best.safetensors", run.metadata(epoch, summary), state.best_threshold
        )
        run.events.emit(
            "best", epoch=epoch, val_aufroc=auc, path=str(path), threshold=state.best_threshold
        )
    return summary


def export(run: Run, state: TrainState, epochs_done: int) -> Path | None:
    """The best weights become ``RUN_DIR/model.safetensors`` (rank 0; atomic) with the
    validation threshold and provenance, plus ``froc_best.png/json``. None without a best."""
    best_file = run.run_dir / "best.safetensors"
    if not (run.main and best_file.is_file()):
        return None
    run.adapter.load_weights(best_file)
    md = run.metadata(
        epochs_done,
        {
            "val_aufroc": state.best_aufroc,
            "best_epoch": state.best_epoch,
            "target_fppi": run.cfg.eval.target_fppi,
        },
    )
    path = run.adapter.save(
        run.run_dir / "model.safetensors",
        md,
        state.best_threshold,
        fp16=run.cfg.train.export_fp16,
    )
    if state.best_curve is not None:
        _plot_froc(run.run_dir, state.best_curve, f"{run.cfg.model} epoch {state.best_epoch}")
    return path


def _record_epoch(
    run: Run,
    state: TrainState,
    epoch: int,
    res: EpochResult,
    val: dict | None,
    ep_time: float,
    eta: float,
) -> None:
    """Append the epoch's row to the history; emit ``epoch``; rewrite ``metrics.csv``."""
    row = {
        "epoch": epoch,
        "train_loss": res.mean("loss"),
        "train_cls": res.mean("cls"),
        "train_reg": res.mean("reg"),
        "val_aufroc": float(val["aufroc"]) if val else float("nan"),
        "lr": run.optim.lr,
        "epoch_time_s": ep_time,
        "images_per_s": res.images / res.seconds if res.seconds > 0 else float("nan"),
    }
    for k, v in (val["sensitivity"] if val else {}).items():
        row[f"val_sens@{k}"] = v
    state.history.append(row)
    if not run.main:
        return
    run.events.emit(
        "epoch",
        epoch=epoch,
        train_loss=row["train_loss"],
        val_aufroc=row["val_aufroc"],
        lr=row["lr"],
        eta_s=eta,
        images_per_s=row["images_per_s"],
        val_sensitivity=val["sensitivity"] if val else None,
        epoch_time_s=ep_time,
    )
    _write_metrics_csv(run.run_dir / "metrics.csv", state.history)
    if run.tb is not None:
        run.tb.add_scalar("val/aufroc", row["val_aufroc"], epoch)
        run.tb.add_scalar("train/epoch_loss", row["train_loss"], epoch)


# --------------------------------------------------------------------------- the run


def train(
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    init: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str = "auto",
    epochs: int | None = None,
    progress: bool = True,
    register: str | None = None,
    stop: StopFlag | None = None,
) -> TrainResult:
    """Train (or fine-tune with ``init``) and export ``RUN_DIR/model.safetensors``."""
    run_dir = Path(run_dir)
    dev = pick_device(device)
    dist_info = tdist.setup_distributed(dev.type)
    if dev.type == "cuda" and dist_info.enabled:
        dev = torch.device("cuda", dist_info.local_rank)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    tdist.barrier(dist_info)
    events = EventLog(run_dir / "events.jsonl", enabled=dist_info.is_main)
    own_stop = stop is None
    stop = stop or StopFlag()
    if own_stop:
        stop.install()
    try:
        return _train(
            cfg, run_dir, init, resume, dev, epochs, progress, register, stop, events, dist_info
        )
    except TrainingAborted as exc:
        events.emit("aborted", message=str(exc))
        raise
    except BaseException as exc:
        msg = (
            f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, KeyboardInterrupt)
            else "interrupted"
        )
        events.emit("error", message=msg)
        raise
    finally:
        events.close()
        if own_stop:
            stop.uninstall()
        tdist.cleanup(dist_info)


def _prepare(
    cfg: TrainConfig,
    run_dir: Path,
    init: str | os.PathLike[str] | None,
    checkpoint: dict[str, Any] | None,
    dev: torch.device,
    n_epochs: int,
    progress: bool,
    stop: StopFlag,
    events: EventLog,
    dist_info: tdist.DistInfo,
) -> tuple[Run, TrainState]:
    """Seed, build the model (``init`` / checkpoint weights), load the data, build the
    optimisation and the DataLoader: everything :func:`_train` needs, and the start state."""
    from tqdm.auto import tqdm

    t, d, main, world = cfg.train, cfg.data, dist_info.is_main, dist_info.world_size
    if t.batch_size % world:
        raise TrainingError(
            f"train.batch_size ({t.batch_size}) is the global batch and must be divisible by "
            f"the number of processes ({world})"
        )
    if dev.type == "cpu" and torch.get_num_threads() > 2 and os.environ.get("GRAVITY_THREADS"):
        torch.set_num_threads(int(os.environ["GRAVITY_THREADS"]))
    set_seed(t.seed, t.deterministic)
    init_path = Path(init) if init is not None else None
    if init_path is not None and not init_path.is_file():
        raise TrainingError(f"--init {init_path}: no such model file")
    parent_hash = file_sha256(init_path) if init_path is not None else None
    # with a checkpoint: the parent's architecture (if any), then the checkpoint's weights
    adapter = build_adapter(cfg, init_path)
    model = adapter.model.to(dev)
    if main:
        log.info(adapter.init_message)

    if d.synthetic is not None and main:
        tdata.ensure_synthetic(d, run_dir)  # rank 0 writes it, the others wait
    tdist.barrier(dist_info)
    split = tdata.open_split(d, run_dir, seed=t.seed)
    norm, quiet = adapter.normalization, not (progress and main)
    train_imgs = [
        tdata.prepare(r, norm, d.use_masks)
        for r in tqdm(split.train, desc="load train", disable=quiet, leave=False)
    ]
    val_refs = split.val[: cfg.eval.max_images] if cfg.eval.max_images else split.val
    val_imgs = (
        [tdata.prepare(r, norm, d.use_masks, keep_raw=True) for r in val_refs] if main else []
    )

    channels_last = t.channels_last is True or (t.channels_last == "auto" and dev.type == "cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if t.sync_bn and dist_info.enabled and dev.type == "cuda":
        model = adapter.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: torch.nn.Module = model
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    amp_ctx, amp_mode = _amp_context(dev, t.amp)
    optim = build_optimisation(model, t, amp_mode)
    state = TrainState.from_checkpoint(checkpoint, model, optim) if checkpoint else TrainState()

    steps = max(1, len(train_imgs) * d.tiles_per_image // t.batch_size)
    if t.max_steps_per_epoch:
        steps = min(steps, t.max_steps_per_epoch)
    batches = tdata.EpochBatches(t.batch_size, dist_info.rank, world)
    generator = torch.Generator()
    loader = torch.utils.data.DataLoader(
        tdata.TileDataset(train_imgs, d.tile_size, d.pos_fraction, d.flips),
        batch_sampler=batches,
        num_workers=t.num_workers,
        collate_fn=tdata.collate,
        pin_memory=dev.type == "cuda",
        generator=generator,
    )
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        dev=dev,
        dist=dist_info,
        events=events,
        stop=stop,
        adapter=adapter,
        model=model,
        net=net,
        optim=optim,
        amp_ctx=amp_ctx,
        amp_mode=amp_mode,
        channels_last=channels_last,
        n_train=len(train_imgs),
        val_imgs=val_imgs,
        n_val=len(val_refs),
        data_description=split.description,
        loader=loader,
        batches=batches,
        generator=generator,
        steps_per_epoch=steps,
        n_epochs=n_epochs,
        progress=progress,
        init_path=init_path,
        parent_hash=parent_hash,
        tb=_tb_writer(run_dir, t.tensorboard and main),
    )
    return run, state


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    init: str | os.PathLike[str] | None,
    resume: bool,
    dev: torch.device,
    epochs_override: int | None,
    progress: bool,
    register: str | None,
    stop: StopFlag,
    events: EventLog,
    dist_info: tdist.DistInfo,
) -> TrainResult:
    git_commit()  # provenance: the code as it is now, not at export time
    checkpoint = ckpt.load_checkpoint(run_dir / "checkpoint.pt") if resume else None
    if checkpoint is not None and init is not None:
        log.info("--resume: the checkpoint's weights take precedence over --init")
    n_epochs = int(epochs_override or cfg.train.epochs)
    run, state = _prepare(
        cfg, run_dir, init, checkpoint, dev, n_epochs, progress, stop, events, dist_info
    )
    if run.main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    events.emit(
        "start",
        epochs=n_epochs,
        steps_per_epoch=run.steps_per_epoch,
        run_dir=str(run_dir),
        resumed_from_epoch=state.next_epoch if checkpoint is not None else None,
        world_size=dist_info.world_size,
        device=str(dev),
        amp=run.amp_mode,
        model=cfg.model,
        init=str(run.init_path) if run.init_path else None,
        n_train=run.n_train,
        n_val=run.n_val,
        data=run.data_description,
        message=run.adapter.init_message,
    )
    stopped = budget_stop = False
    t_start = time.time()
    epoch_times: list[float] = []
    last_epoch_done = state.next_epoch - 1
    for epoch in range(state.next_epoch, n_epochs + 1):
        t_ep = time.time()
        res = train_epoch(run, state, epoch)
        stopped = res.stopped
        if stopped and res.last_step < run.steps_per_epoch:
            break  # the checkpoint holds the position inside this epoch
        val = validate_and_keep_best(run, state, epoch)
        epoch_times.append(time.time() - t_ep)
        eta = float(np.mean(epoch_times)) * (n_epochs - epoch)
        _record_epoch(run, state, epoch, res, val, epoch_times[-1], eta)
        last_epoch_done = epoch
        state.next_epoch, state.next_step = epoch + 1, 0
        run.save_checkpoint(state)
        if stopped:
            break
        budget = cfg.train.time_budget_s
        if budget and epoch < n_epochs:
            elapsed = time.time() - t_start
            over = elapsed + float(np.mean(epoch_times)) > budget
            if tdist.broadcast_object(over, dist_info):  # rank 0's clock decides for all
                log.info("time budget: %.0f s used of %.0f s; stopping after epoch %d",
                         elapsed, budget, epoch)  # fmt: skip
                budget_stop = True
                break
        if cfg.train.early_stopping and state.no_improve >= cfg.train.early_stopping:
            log.info("early stopping: no improvement for %d epochs", state.no_improve)
            break
    if run.tb is not None:
        run.tb.close()
    last_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}

    check_abort(run_dir, "before export")
    model_path = export(run, state, last_epoch_done)
    registered: str | None = None
    if model_path is not None and register:
        from napari_gravity.core.registry import register_model

        registered = register_model(model_path, register).label
    tdist.barrier(dist_info)
    if run.main:
        events.emit(
            "done",
            model_path=str(model_path) if model_path else None,
            best_val_aufroc=state.best_aufroc if state.best_aufroc >= 0 else None,
            best_epoch=state.best_epoch,
            threshold=state.best_threshold,
            stopped=stopped,
            budget_reached=budget_stop,
            epochs_run=last_epoch_done,
            registered=registered,
            wall_s=time.time() - t_start,
        )
    return TrainResult(
        model_path=model_path,
        best_val_aufroc=state.best_aufroc,
        best_epoch=state.best_epoch,
        threshold=state.best_threshold,
        stopped=stopped,
        epochs_run=last_epoch_done,
        registered=registered,
        history=state.history,
        last_state=last_state,
    )
