"""Microaneurysm detection across camera resolutions: whole fundus photographs whose field of
view (FOV) is 0.7-3× the 1,200 px the MA data are drawn at, with and without the Predictor's
resampling to the model's FOV scale (``core/fov.py``).

Images: whole synthetic fundus photographs (``synth_fundus(view="full")``: the FOV fills
94 % of the short side, MAs sized to it, JPEG in 70 %), drawn at each size directly (not
resized), the FOV mask found by ``data.masks.fundus_mask`` as ``gravity predict`` finds it.
The lesions are this project's generator's (the model saw its crops in training): what
changes between the rows is only the camera's resolution.

Methods: top-hat and Hessian-DoG (dark), the model as it ran before (no resampling:
``fov_reference`` None) and with resampling to ``--fov`` px (default: the model file's
``fov_diameter_px``, else 1200). AUFROC_10 per scale with bootstrap CIs, paired Δ, and the
false positives per image and sensitivity at the stored γ.

Usage: ``python benchmarks/ma_scale.py --model default_ma=FILE [--scales 0.7,1,1.5,2,3]
[--per-scale 6] --out benchmarks/results/ma_scale.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import machine, save_json  # noqa: E402

BASE = 1300  # image side at scale 1: a FOV of 0.94 × 1300 ≈ 1,222 px


def build(scales: list[float], per_scale: int, seed: int) -> tuple[dict, dict]:
    """``(samples, subsets)``: ``per_scale`` whole fundus images per scale."""
    from dataclasses import replace

    from napari_gravity.data.masks import fundus_mask
    from napari_gravity.data.synthetic.fundus import synth_fundus

    samples, subsets = {}, {}
    for k, sc in enumerate(scales):
        n = round(BASE * sc)
        ids = []
        for i in range(per_scale):
            rng = np.random.default_rng([seed, k, i])
            s, _ = synth_fundus((n, n), rng, view="full", rgb=True, has_lesions=True)
            key = f"fundus-x{sc:g}-{i}"
            samples[key] = replace(s, mask=fundus_mask(s.image), image_id=key)
            ids.append(key)
        subsets[f"scale {sc:g} ({n} px)"] = ids
        print(f"[build] scale {sc:g}: {per_scale} images of {n}²", flush=True)
    return samples, subsets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, metavar="NAME=PATH")
    ap.add_argument("--scales", default="0.7,1,1.5,2,3")
    ap.add_argument("--per-scale", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5150)
    ap.add_argument("--fov", type=float, default=None, help="the model's FOV diameter (px)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from robustness import detect_all, evaluate, print_subsets

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.detectors import HessianDoG, TopHat
    from napari_gravity.evaluation.froc import match_image

    torch.set_num_threads(2)
    scales = [float(v) for v in args.scales.split(",")]
    t0 = time.time()
    samples, subsets = build(scales, args.per_scale, args.seed)
    t_build = time.time() - t0
    ids = list(samples)
    name, _, path = args.model.partition("=")
    methods: dict = {}
    for label, det in (
        ("top-hat", TopHat(polarity="dark")),
        ("Hessian-DoG", HessianDoG(polarity="dark")),
    ):
        methods[label] = {"dets": detect_all(det, samples, ids)}
        print(f"[eval] {label} done", flush=True)
    fov = args.fov
    timing = {}
    for label, ref in ((f"{name} (no resampling)", None), (name, "model")):
        pred = Predictor.from_file(path, device="cpu", tta="off")
        if ref is None:
            pred.fov_reference = None
        elif fov is not None or pred.fov_reference is None:
            pred.fov_reference = float(fov or 1200.0)
        t1 = time.time()
        methods[label] = {
            "dets": detect_all(pred, samples, ids, threshold=pred.floor),
            "threshold": float(pred.config.threshold),
            "fov_reference": pred.fov_reference,
            "zoom": {i: round(pred.zoom_for(samples[i].mask), 4) for i in ids},
            "predictor": pred,
        }
        timing[label] = round(time.time() - t1, 1)
        print(f"[eval] {label} done ({timing[label]} s)", flush=True)
    results = evaluate(subsets, samples, methods, args.bootstrap, f"{name} (no resampling)")
    print_subsets(results, list(methods))
    product = {}  # what `gravity predict` marks: γ raised by the area rule for a whole fundus
    for label in (f"{name} (no resampling)", name):
        m = methods[label]
        pred = m["predictor"]
        for sub, sids in subsets.items():
            fp = tp = n = 0
            for i in sids:
                s = samples[i]
                z = m["zoom"][i]
                area = pred.tissue_area(s.image.shape, s.mask, z)
                gamma = pred.params_for("off", area)["threshold"]
                d = m["dets"][i]
                keep = d.scores >= gamma
                lab = match_image(d.points[keep], d.scores[keep], s.points, s.radii, mask=s.mask)
                fp += int(np.sum(lab.labels == 0))
                tp += lab.n_tp
                n += len(s.points)
            product.setdefault(sub, {})[label] = {
                "fppi": round(fp / len(sids), 2),
                "sensitivity": round(tp / max(n, 1), 3),
            }
    print("at the γ gravity predict uses (area rule): FPpI / sensitivity")
    for sub, r in product.items():
        print(
            f"  {sub:<22}",
            "  ".join(f"{k}: {v['fppi']} / {v['sensitivity']:.0%}" for k, v in r.items()),
        )
    out = {
        "benchmark": "MA across camera resolutions (whole synthetic fundus photographs)",
        "what": __doc__.split("\n\n")[0],
        "model": path,
        "fov_reference_px": methods[name]["fov_reference"],
        "scales": scales,
        "images_per_scale": args.per_scale,
        "seed": args.seed,
        "lesions": int(sum(len(s.points) for s in samples.values())),
        "zoom_per_image": methods[name]["zoom"],
        "build_s": round(t_build, 1),
        "detect_s": timing,
        "machine": machine(),
        "subsets": results,
        "at_area_rule_threshold": product,
    }
    save_json(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
