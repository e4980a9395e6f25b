"""``gravity train CONFIG.yaml --out RUN_DIR [...]``: train, fine-tune (``--init``) or resume.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m training train CONFIG --out RUN_DIR``
(``train.batch_size`` is the global batch, split evenly over the processes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a detector from a YAML config",
        description=(
            "Train GravityNet (or the RetinaNet comparator) from a YAML config; fine-tune from a "
            "model file with --init; continue an interrupted run with --resume. Writes "
            "RUN_DIR/events.jsonl, metrics.csv, checkpoint.pt and model.safetensors."
        ),
    )
    p.add_argument("config", help="YAML config file, or the name of a bundled config (e.g. tiny)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config key, e.g. --set train.lr=1e-5 --set data.tile_size=128",
    )
    p.add_argument(
        "--init", metavar="MODEL", help="fine-tune from this model file (or registry name)"
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides train.epochs)")
    p.add_argument(
        "--register",
        metavar="NAME",
        help="register the final model in the model registry under NAME "
        "(always done for --init; default name: the config's name or the parent's)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.set_defaults(func=run)
    return p


def _has_override(overrides: list[str], key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides or [])
    cfg = load_config(args.config, overrides)  # ConfigError (a ValueError) names the key
    run_dir = Path(args.out)
    init = None
    register = args.register
    epochs = args.epochs
    if args.init:
        from napari_gravity.core.registry import resolve_model

        init = resolve_model(args.init)
        if (run_dir / "model.safetensors").resolve() == Path(init).resolve():
            raise ConfigError(
                f"--out {run_dir}: its model.safetensors is the --init model; choose another --out "
                "(fine-tuning never overwrites its source)"
            )
        if not _has_override(overrides, "train.lr"):
            cfg.train.lr = cfg.train.finetune_lr
        if epochs is None:
            epochs = cfg.train.finetune_epochs
        if register is None:
            from napari_gravity.core.registry import read_metadata

            parent_name = read_metadata(init).get("name")
            register = (
                cfg.name or (parent_name if isinstance(parent_name, str) else None) or "finetuned"
            )
            register = "".join(c if c.isalnum() or c in "_.-" else "_" for c in register)
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {epochs}")
    if not args.resume and (run_dir / "checkpoint.pt").exists():
        raise ConfigError(
            f"--out {run_dir} already holds a run (checkpoint.pt); use --resume to continue it "
            "or choose another folder"
        )
    from training.loop import TrainingError, train

    progress = not args.no_progress and os.environ.get("GRAVITY_NO_PROGRESS") != "1"
    try:
        res = train(
            cfg,
            run_dir,
            init=init,
            resume=args.resume,
            device=args.device,
            epochs=epochs,
            progress=progress,
            register=register,
        )
    except TrainingError as exc:  # a message for the user (bad --device, NaN loss, ...)
        print(f"gravity train: error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        state = "stopped (checkpoint saved; continue with --resume)" if res.stopped else "done"
        print(
            f"gravity train: {state}: best val AUFROC {res.best_val_aufroc:.4f} at epoch "
            f"{res.best_epoch}, threshold {res.threshold:.4f}, model {res.model_path}"
            + (f", registered as {res.registered}" if res.registered else "")
        )
    return 0
