"""Where a model loses on ``mc-bench``: its test split by background (the v1 generator's
synthetic texture vs the semi-real patches on the held-out patient's real films), and what
the false positives at the stored γ look like.

For each ``--model NAME=PATH[,tta=MODE]`` and the classical detectors: AUFROC_10 per subset
with paired bootstraps (``--versus``), and for the models, at their stored γ, each false
positive described by the image around it:

- ``contrast``: (mean of the 3×3 centre − median of the 17×17 window) / its MAD;
- ``sharpness``: (centre pixel − mean of its 8 neighbours) / (centre pixel − window median):
  near 1 for a lone bright pixel (the generator's unlabelled single-pixel specks, added after
  the blur), small for anything the blur spread;
- ``in a cluster``: at least two labelled calcifications within 20 px;
- ``nearest``: the distance (px) to the nearest labelled calcification (a mark a few px off a
  lesion it did not match is a localisation error, one far from any is a false alarm).

Usage: ``python benchmarks/mc_bench_breakdown.py --data data/mc-bench --model v6=FILE,tta=d8
--model v1=FILE --versus v6 --out benchmarks/results/mc_bench_breakdown.json``. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import machine, save_json  # noqa: E402

HALF = 8  # the 17×17 window around a candidate


def describe(img: np.ndarray, y: float, x: float) -> dict | None:
    """Contrast and sharpness of the pixel nearest (y, x); None within HALF px of the border."""
    iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    h, w = img.shape
    if iy < HALF or ix < HALF or iy >= h - HALF or ix >= w - HALF:
        return None
    win = img[iy - HALF : iy + HALF + 1, ix - HALF : ix + HALF + 1].astype(np.float64)
    med = float(np.median(win))
    mad = float(np.median(np.abs(win - med))) or 1e-9
    core = float(img[iy - 1 : iy + 2, ix - 1 : ix + 2].mean())
    c = float(img[iy, ix])
    neigh = (float(img[iy - 1 : iy + 2, ix - 1 : ix + 2].sum()) - c) / 8.0
    return {
        "contrast": (core - med) / mad,
        "sharpness": (c - neigh) / (c - med) if c > med else 0.0,
    }


def false_positives(sample, det, threshold: float) -> list[dict]:
    """Each false positive at ``threshold`` (bbox matching, the protocol's) and its description."""
    from napari_gravity.evaluation.froc import match_image

    keep = det.scores >= threshold
    pts, sc = det.points[keep], det.scores[keep]
    m = match_image(pts, sc, sample.points, sample.radii, mask=sample.mask)
    out = []
    for p, lab in zip(pts, m.labels, strict=True):
        if lab != 0:
            continue
        d = describe(sample.image, *p)
        if d is None:
            continue
        dist = np.hypot(*(sample.points - p).T) if len(sample.points) else np.array([np.inf])
        near = int(np.sum(dist <= 20.0))
        out.append({**d, "in_cluster": near >= 2, "nearest": float(dist.min())})
    return out


def _finite(v: float) -> float | None:
    return round(float(v), 1) if np.isfinite(v) else None


def summarise(fps: list[dict], n_images: int) -> dict:
    if not fps:
        return {"fp": 0, "fppi": 0.0}
    con = np.array([f["contrast"] for f in fps])
    sharp = np.array([f["sharpness"] for f in fps])
    return {
        "fp": len(fps),
        "fppi": round(len(fps) / n_images, 2),
        "contrast_median": round(float(np.median(con)), 2),
        "contrast_q25_q75": [round(float(v), 2) for v in np.percentile(con, [25, 75])],
        "sharp_specks": int(np.sum(sharp > 0.5)),
        "in_cluster": int(sum(f["in_cluster"] for f in fps)),
        "within_4px_of_a_lesion": int(sum(f["nearest"] <= 4.0 for f in fps)),
        # None on images without lesions (nothing to be near; keeps the JSON standard)
        "nearest_median_px": _finite(np.median([f["nearest"] for f in fps])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="an mc-bench folder with a test split")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH[,tta=MODE]")
    ap.add_argument("--versus", default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from robustness import evaluate, print_subsets, run_methods

    from napari_gravity.data.synthetic.benchmark import get_recipe, load_benchmark, plan

    torch.set_num_threads(2)
    root = Path(args.data)
    info = json.loads((root / "recipe.json").read_text())["recipe"]
    recipe = get_recipe(info["name"], counts=info["counts"], seed=info["seed"])
    semi = {e["image_id"] for e in plan(recipe) if e["split"] == "test" and e["semi_real"]}
    samples = {r.image_id: r.load() for r in load_benchmark(root)["test"]}
    ids = list(samples)
    subsets = {
        "all": ids,
        "synthetic texture": [i for i in ids if i not in semi],
        "semi-real (real film)": [i for i in ids if i in semi],
    }
    t0 = time.time()
    methods = run_methods(samples, ids, "bright", args.model)
    results = evaluate(subsets, samples, methods, args.bootstrap, args.versus)
    fp_report: dict = {}
    for name, m in methods.items():
        if m.get("threshold") is None:
            continue
        fp_report[name] = {}
        for sub, sids in subsets.items():
            fps = [
                f for i in sids for f in false_positives(samples[i], m["dets"][i], m["threshold"])
            ]
            fp_report[name][sub] = summarise(fps, len(sids))
        free = [i for i in ids if not len(samples[i].points)]
        fp_report[name]["lesion-free images"] = summarise(
            [f for i in free for f in false_positives(samples[i], m["dets"][i], m["threshold"])],
            len(free),
        )
    print_subsets(results, list(methods))
    print("\nfalse positives at the stored γ (contrast in MADs; specks: sharpness > 0.5)")
    for name, rep in fp_report.items():
        for sub, r in rep.items():
            print(f"  {name:>14} {sub:<24} {json.dumps(r)}")
    out = {
        "benchmark": "mc-bench breakdown",
        "data": str(root),
        "semi_real_images": sorted(semi),
        "models": {s.partition("=")[0]: s.partition("=")[2] for s in args.model},
        "subsets": results,
        "false_positives_at_stored_threshold": fp_report,
        "eval_s": round(time.time() - t0, 1),
        "machine": machine(),
    }
    save_json(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
