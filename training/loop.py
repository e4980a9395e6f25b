"""The training loop: tiles → loss → Adam, validation FROC every epoch, best model kept.

``train(cfg, run_dir, ...)`` is what ``gravity train`` runs (one process, or one per GPU under
``torchrun``). Paper defaults: Adam lr 1e-4, ReduceLROnPlateau(factor 0.1, patience 3) on the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from napari_gravity.fileio import atomic_write_text
from training import checkpoint as ckpt
from training import data as tdata
from training import distributed as tdist
from training.abort import TrainingAborted, check_abort
from training.config import TrainConfig
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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise TrainingError(f"--device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def git_commit() -> str | None:
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
    (run_dir / "froc_best.json").write_text(json.dumps(curve))
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


# --------------------------------------------------------------------------- the loop


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
    main = dist_info.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    tdist.barrier(dist_info)
    events = EventLog(run_dir / "events.jsonl", enabled=main)
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


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    init,
    resume: bool,
    dev: torch.device,
    epochs_override: int | None,
    progress: bool,
    register: str | None,
    stop: StopFlag,
    events: EventLog,
    dist_info: tdist.DistInfo,
) -> TrainResult:
    from tqdm.auto import tqdm

    t_cfg, e_cfg, d_cfg = cfg.train, cfg.eval, cfg.data
    main = dist_info.is_main
    world = dist_info.world_size
    n_epochs = int(epochs_override or t_cfg["epochs"])
    seed = int(t_cfg["seed"])
    global_batch = int(t_cfg["batch_size"])
    if global_batch % world:
        raise TrainingError(
            f"train.batch_size ({global_batch}) is the global batch and must be divisible by "
            f"the number of processes ({world})"
        )
    local_batch = global_batch // world
    if dev.type == "cpu" and torch.get_num_threads() > 2 and os.environ.get("GRAVITY_THREADS"):
        torch.set_num_threads(int(os.environ["GRAVITY_THREADS"]))

    ckpt_path = run_dir / "checkpoint.pt"
    state: dict[str, Any] | None = None
    if resume:
        state = ckpt.load_checkpoint(ckpt_path)
        if init is not None:
            log.info("--resume: the checkpoint's weights take precedence over --init")

    set_seed(seed, t_cfg["deterministic"])
    init_path = Path(init) if init is not None else None
    if init_path is not None and not init_path.is_file():
        raise TrainingError(f"--init {init_path}: no such model file")
    parent_hash = file_sha256(init_path) if init_path is not None else None
    adapter = build_adapter(cfg, init_path if state is None else None)
    if state is not None and init_path is not None:
        # rebuild the architecture of the parent, then load the checkpoint's weights into it
        adapter = build_adapter(cfg, init_path)
    model = adapter.model.to(dev)
    if state is not None:
        model.load_state_dict(state["model"])
    if main:
        log.info(adapter.init_message)

    # ---- data
    if d_cfg["synthetic"] is not None and main:
        tdata.ensure_synthetic(d_cfg, run_dir)  # rank 0 writes it, the others wait
    tdist.barrier(dist_info)
    split = tdata.open_split(d_cfg, run_dir, seed=seed)
    norm = adapter.net_config().get("normalization", "minmax")
    use_masks = bool(d_cfg["use_masks"])
    train_imgs = [
        tdata.prepare(r, norm, use_masks)
        for r in tqdm(split.train, desc="load train", disable=not (progress and main), leave=False)
    ]
    val_refs = split.val[: e_cfg["max_images"]] if e_cfg["max_images"] else split.val
    val_imgs = [tdata.prepare(r, norm, use_masks, keep_raw=True) for r in val_refs] if main else []

    # ---- optimisation
    channels_last = t_cfg["channels_last"] is True or (
        t_cfg["channels_last"] == "auto" and dev.type == "cuda"
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if t_cfg["sync_bn"] and dist_info.enabled and dev.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        adapter.model = model
    net: torch.nn.Module = model
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if t_cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(
            model.parameters(),
            lr=t_cfg["lr"],
            momentum=t_cfg["momentum"],
            weight_decay=t_cfg["weight_decay"],
        )
    else:
        kind = torch.optim.AdamW if t_cfg["optimizer"] == "adamw" else torch.optim.Adam
        opt = kind(model.parameters(), lr=t_cfg["lr"], weight_decay=t_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="max",
        factor=t_cfg["lr_factor"],
        patience=t_cfg["lr_patience"],
        min_lr=t_cfg["min_lr"],
    )
    amp_ctx, amp_mode = _amp_context(dev, t_cfg["amp"])
    scaler = torch.amp.GradScaler("cuda") if amp_mode == "fp16" else None

    start_epoch, start_step = 1, 0
    best_aufroc, best_epoch, no_improve = -1.0, 0, 0
    best_threshold, best_curve = 1.0, None
    history: list[dict[str, Any]] = []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, start_step = int(state["next_epoch"]), int(state["next_step"])
        best_aufroc, best_epoch = float(state["best_aufroc"]), int(state["best_epoch"])
        no_improve = int(state["no_improve"])
        best_threshold = float(state.get("best_threshold", 1.0))
        best_curve = state.get("best_curve")
        history = list(state.get("history", []))

    n_items = len(train_imgs) * int(d_cfg["tiles_per_image"])
    steps_per_epoch = max(1, n_items // global_batch)
    if t_cfg["max_steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, int(t_cfg["max_steps_per_epoch"]))

    if main:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    events.emit(
        "start",
        epochs=n_epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=str(run_dir),
        resumed_from_epoch=start_epoch if state is not None else None,
        world_size=world,
        device=str(dev),
        amp=amp_mode,
        model=cfg.model,
        init=str(init_path) if init_path else None,
        n_train=len(train_imgs),
        n_val=len(val_refs),
        data=split.description,
        message=adapter.init_message,
    )
    tb = _tb_writer(run_dir, bool(t_cfg["tensorboard"]) and main)

    def save_resume(next_epoch: int, next_step: int) -> None:
        if not main:
            return
        ckpt.save_checkpoint(
            ckpt_path,
            {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "next_epoch": next_epoch,
                "next_step": next_step,
                "best_aufroc": best_aufroc,
                "best_epoch": best_epoch,
                "best_threshold": best_threshold,
                "best_curve": best_curve,
                "no_improve": no_improve,
                "history": history,
                "config": json.dumps(cfg.to_dict()),
                "rng": ckpt.rng_state(),
            },
        )

    def metadata(epochs_done: int, val: dict[str, Any] | None) -> dict[str, Any]:
        parent = None
        if init_path is not None:
            pm = getattr(adapter, "parent_metadata", {}) or {}
            parent = {
                "path": str(init_path.resolve()),
                "sha256": parent_hash,
                "date": (pm.get("provenance") or {}).get("date"),
                "name": pm.get("name"),
            }
        return {
            "name": cfg.name or (run_dir.name if init_path is None else f"{run_dir.name}"),
            "model": cfg.model,
            "task": cfg.task or (getattr(adapter, "parent_metadata", {}) or {}).get("task"),
            "provenance": {
                "commit": git_commit(),
                "data": split.description,
                "config": cfg.to_dict(),
                "epochs": epochs_done,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "parent": parent,
                "world_size": world,
                "device": str(dev),
            },
            "metrics": val or {},
        }

    stopped = False
    budget_stop = False
    t_start = time.time()
    epoch_times: list[float] = []
    epoch = start_epoch
    last_epoch_done = start_epoch - 1
    for epoch in range(start_epoch, n_epochs + 1):
        t_ep = time.time()
        net.train()
        if t_cfg["freeze_bn"]:
            _set_bn_eval(model)
        items = tdata.epoch_items(len(train_imgs), int(d_cfg["tiles_per_image"]), seed, epoch)
        need = steps_per_epoch * global_batch
        if len(items) < need:
            items = (items * math.ceil(need / len(items)))[:need]
        items = items[:need]
        # a resumed epoch starts at its first unseen batch (the skipped tiles are never cut)
        skip = start_step if epoch == start_epoch else 0
        ds = tdata.TileDataset(
            train_imgs,
            items[skip * global_batch :],
            d_cfg["tile_size"],
            d_cfg["pos_fraction"],
            d_cfg["flips"],
        )
        sampler = None
        if dist_info.enabled:
            sampler = torch.utils.data.distributed.DistributedSampler(
                ds, num_replicas=world, rank=dist_info.rank, shuffle=False, drop_last=True
            )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=local_batch,
            shuffle=False,
            sampler=sampler,
            num_workers=int(t_cfg["num_workers"]),
            collate_fn=tdata.collate,
            drop_last=True,
            pin_memory=dev.type == "cuda",
            persistent_workers=False,
            # its own generator: creating the iterator draws no number from the global RNG
            generator=torch.Generator().manual_seed(seed * 1000 + epoch),
        )
        sums = {"loss": 0.0, "cls": 0.0, "reg": 0.0}
        n_done = 0
        last_emit = 0.0
        bar = tqdm(
            total=steps_per_epoch,
            initial=skip,
            desc=f"epoch {epoch}/{n_epochs}",
            disable=not (progress and main),
            leave=False,
        )
        n_img_seen = 0
        t_steps = time.time()
        step = skip
        if state is not None and epoch == start_epoch and state.get("rng") is not None:
            ckpt.set_rng_state(state["rng"])  # the random stream continues where it stopped
        for step_idx, (images, targets) in enumerate(loader, start=skip):
            images = images.to(dev, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [t.to(dev) for t in targets]
            gstep = (epoch - 1) * steps_per_epoch + step_idx
            if t_cfg["warmup_steps"] and gstep < t_cfg["warmup_steps"]:
                for g in opt.param_groups:
                    g["lr"] = t_cfg["lr"] * (gstep + 1) / t_cfg["warmup_steps"]
            with amp_ctx:
                out = adapter.losses(net, images, targets)
            loss = out["loss"].float()
            if dist_info.enabled and out.get("n_pos") is not None:
                # The loss is normalised by the positives of the WHOLE global batch, exactly as
                # a single process with the same global batch would (DDP averages gradients).
                n_local = float(out["n_pos"])
                n_total = tdist.all_reduce_sum(n_local, dist_info, dev)
                loss = loss * (max(1.0, n_local) * world / max(1.0, n_total))
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if t_cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg["grad_clip"])
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise TrainingError(
                    f"epoch {epoch} step {step_idx + 1}: the loss is {lv}; lower train.lr"
                )
            sums["loss"] += lv
            sums["cls"] += float(out["cls"])
            sums["reg"] += float(out["reg"])
            n_done += 1
            n_img_seen += images.shape[0] * world
            step = step_idx + 1
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.4f}")
            now = time.time()
            if main and (now - last_emit >= 0.5 or step == steps_per_epoch):
                last_emit = now
                events.emit(
                    "step",
                    epoch=epoch,
                    step=step,
                    steps_per_epoch=steps_per_epoch,
                    loss=lv,
                    cls=float(out["cls"]),
                    reg=float(out["reg"]),
                    lr=opt.param_groups[0]["lr"],
                )
            if tb is not None:
                tb.add_scalar("train/loss", lv, gstep)
            check_abort(run_dir, f"epoch {epoch} step {step}")
            stop_now = stop.is_set()
            if dist_info.enabled:
                stop_now = tdist.all_reduce_sum(float(stop_now), dist_info, dev) > 0
            if stop_now:
                stopped = True
                break
            if (
                t_cfg["checkpoint_every"]
                and step % t_cfg["checkpoint_every"] == 0
                and step < steps_per_epoch
            ):
                save_resume(epoch, step)
            if step >= steps_per_epoch:
                break
        bar.close()
        train_time = time.time() - t_steps
        if stopped and step < steps_per_epoch:
            save_resume(epoch, step)
            break

        # ---- validation (rank 0), then everyone learns the result
        val: ValResult | None = None
        val_summary: dict[str, Any] | None = None
        if epoch % e_cfg["every"] == 0 or epoch == n_epochs:
            if main:
                model.eval()
                with torch.no_grad(), amp_ctx:
                    dets = detect_all(adapter.detector(dev), val_imgs, e_cfg["min_score"], progress)
                val = score(dets, val_imgs, e_cfg["max_fppi"], e_cfg["target_fppi"])
                val_summary = val.summary()
            val_summary = tdist.broadcast_object(val_summary, dist_info)
        val_auc = float(val_summary["aufroc"]) if val_summary else float("nan")
        if val_summary is not None:
            sched.step(val_auc)
        # without validation lesions the AUFROC is undefined (0): keep the latest weights instead
        improved = val_summary is not None and (
            val_auc > best_aufroc or int(val_summary.get("n_lesions", 1)) == 0
        )
        if improved:
            best_aufroc, best_epoch, no_improve = val_auc, epoch, 0
            best_threshold = float(
                val_summary["threshold_at_target"]
                if e_cfg["fixed_threshold"] is None
                else e_cfg["fixed_threshold"]
            )
            if main and val is not None and val.froc is not None:
                best_curve = {
                    "fppi": [float(x) for x in val.froc.fppi],
                    "tpr": [float(x) for x in val.froc.tpr],
                    "thresholds": [
                        float(x) if math.isfinite(x) else None for x in val.froc.thresholds
                    ],
                    "aufroc": val_auc,
                    "max_fppi": e_cfg["max_fppi"],
                    "epoch": epoch,
                }
            if main:
                best_path = adapter.save(
                    run_dir / "best.safetensors", metadata(epoch, val_summary), best_threshold
                )
                events.emit(
                    "best",
                    epoch=epoch,
                    val_aufroc=val_auc,
                    path=str(best_path),
                    threshold=best_threshold,
                )
        elif val_summary is not None:
            no_improve += 1
        ep_time = time.time() - t_ep
        epoch_times.append(ep_time)
        eta = float(np.mean(epoch_times)) * (n_epochs - epoch)
        row = {
            "epoch": epoch,
            "train_loss": sums["loss"] / max(n_done, 1),
            "train_cls": sums["cls"] / max(n_done, 1),
            "train_reg": sums["reg"] / max(n_done, 1),
            "val_aufroc": val_auc,
            "lr": opt.param_groups[0]["lr"],
            "epoch_time_s": ep_time,
            "images_per_s": n_img_seen / train_time if train_time > 0 else float("nan"),
        }
        if val_summary:
            for k, v in val_summary["sensitivity"].items():
                row[f"val_sens@{k}"] = v
        history.append(row)
        last_epoch_done = epoch
        if main:
            events.emit(
                "epoch",
                epoch=epoch,
                train_loss=row["train_loss"],
                val_aufroc=val_auc,
                lr=row["lr"],
                eta_s=eta,
                images_per_s=row["images_per_s"],
                val_sensitivity=val_summary["sensitivity"] if val_summary else None,
                epoch_time_s=ep_time,
            )
            _write_metrics_csv(run_dir / "metrics.csv", history)
            if tb is not None:
                tb.add_scalar("val/aufroc", val_auc, epoch)
                tb.add_scalar("train/epoch_loss", row["train_loss"], epoch)
        save_resume(epoch + 1, 0)
        if stopped:
            break
        budget = t_cfg["time_budget_s"]
        if budget and epoch < n_epochs:
            elapsed = time.time() - t_start
            over = elapsed + float(np.mean(epoch_times)) > budget
            if tdist.broadcast_object(over, dist_info):  # rank 0's clock decides for all
                log.info(
                    "time budget: %.0f s used of %.0f s; stopping after epoch %d",
                    elapsed,
                    budget,
                    epoch,
                )
                budget_stop = True
                break
        if t_cfg["early_stopping"] and no_improve >= t_cfg["early_stopping"]:
            log.info("early stopping: no improvement for %d epochs", no_improve)
            break
    if tb is not None:
        tb.close()

    last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    # ---- export the best model
    check_abort(run_dir, "before export")
    model_path: Path | None = None
    registered: str | None = None
    best_file = run_dir / "best.safetensors"
    if main and best_file.is_file():
        adapter.load_weights(best_file)
        final_md = metadata(
            last_epoch_done,
            {
                "val_aufroc": best_aufroc,
                "best_epoch": best_epoch,
                "target_fppi": e_cfg["target_fppi"],
            },
        )
        model_path = adapter.save(
            run_dir / "model.safetensors",
            final_md,
            best_threshold,
            fp16=bool(t_cfg.get("export_fp16", False)),
        )
        if best_curve is not None:
            _plot_froc(run_dir, best_curve, f"{cfg.model} epoch {best_epoch}")
        if register:
            from napari_gravity.core.registry import register_model

            entry = register_model(model_path, register)
            registered = entry.label
    tdist.barrier(dist_info)
    if main:
        events.emit(
            "done",
            model_path=str(model_path) if model_path else None,
            best_val_aufroc=best_aufroc if best_aufroc >= 0 else None,
            best_epoch=best_epoch,
            threshold=best_threshold,
            stopped=stopped,
            budget_reached=budget_stop,
            epochs_run=last_epoch_done,
            registered=registered,
            wall_s=time.time() - t_start,
        )
    return TrainResult(
        model_path=model_path,
        best_val_aufroc=best_aufroc,
        best_epoch=best_epoch,
        threshold=best_threshold,
        stopped=stopped,
        epochs_run=last_epoch_done,
        registered=registered,
        history=history,
        last_state=last_state,
    )
