"""What test-time augmentation costs: ``Predictor.detect`` with one pass, 4 views (flips) and
8 views (d8) on the same images, in one run (issue 9's TTA; CPU here, CUDA where present).

Images: synthetic mammogram tiles (``synth_mammogram``) of 384², 512², 1024² and 1536² px, no
mask, the shipped ``default_mc`` at each mode's calibrated γ. Each mode's median of
``--repeats`` runs (the Predictor's cache cleared before each), and its ratio to one pass.

Usage: ``python benchmarks/tta_speed.py [--device cpu] [--threads 2] [--repeats 3]``. Prints a
table and writes ``benchmarks/results/tta_speed_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (384, 512, 1024, 1536)
MODES = ("off", "flips", "d8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.synthetic import synth_mammogram

    path = str(default_model_path("mc"))
    preds = {m: Predictor.from_file(path, device=args.device, tta=m) for m in MODES}
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        img = synth_mammogram((n, n), 7).image.astype("float32")
        preds["off"].detect(img)  # warm-up (allocator, first-call overheads)
        row = {"size": n, "megapixels": round(n * n / 1e6, 3)}
        for m, pred in preds.items():
            times = []
            for _ in range(args.repeats):
                pred.clear_cache()
                t0 = time.perf_counter()
                det = pred.detect(img)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            row[m] = {"seconds": round(statistics.median(times), 4), "detections": len(det)}
        for m in MODES[1:]:
            row[m]["ratio_to_one_pass"] = round(row[m]["seconds"] / row["off"]["seconds"], 2)
        rows.append(row)
        print(
            f"{n:5d}² px  one pass {row['off']['seconds']:7.3f} s   flips "
            f"{row['flips']['seconds']:7.3f} s ({row['flips']['ratio_to_one_pass']:.1f}x)   d8 "
            f"{row['d8']['seconds']:7.3f} s ({row['d8']['ratio_to_one_pass']:.1f}x)",
            flush=True,
        )
    dev = args.device
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(0)
    else:
        dev_name = f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"tta_speed_{dev.split(':')[0]}.json")
    out.write_text(
        json.dumps(
            {
                "device": dev_name,
                "torch": torch.__version__,
                "model": "default_mc (bundled)",
                "repeats": args.repeats,
                "rows": rows,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
