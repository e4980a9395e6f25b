"""Classical baselines (Hessian-DoG, top-hat) on a synthetic benchmark's test split.

    .venv/bin/python benchmarks/baselines.py [--recipe mc-bench] [--root runs/bench/mc-bench]
        [--bootstrap 1000] [--limit N] [--out benchmarks/results/baselines_mc-bench.json]

Generates the benchmark with ``make_benchmark`` if ``--root`` holds none, runs both detectors
on every test image (with the image's tissue mask; bright lesions for mammograms, dark for
fundus), evaluates with the paper's FROC protocol (bbox criterion, duplicates = FP, γ = 10),
bootstraps over images, compares the two detectors paired, prints a table and writes JSON (and
the prediction CSVs next to the benchmark, for ``gravity evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from napari_gravity.detectors import HessianDoG, TopHat
from napari_gravity.evaluation import compare_bootstrap, evaluate_detections, froc_curve
from napari_gravity.evaluation.io import write_predictions_csv
from napari_gravity.evaluation.report import comparison_dict, report_markdown

SENS_AT = (0.5, 1.0, 2.0, 4.0, 8.0)


def ensure_benchmark(root: Path, recipe: str, workers: int, split: str, only_split: bool) -> None:
    """Generate the benchmark if ``root`` has none. With ``only_split``, only ``split`` is
    generated: every image has its own seed (recipe seed, split, index), so these images are
    identical to the same split of the full recipe."""
    if (root / "recipe.json").is_file():
        return
    from napari_gravity.data.synthetic import make_benchmark
    from napari_gravity.data.synthetic.benchmark import get_recipe

    over = {}
    if only_split:
        full = get_recipe(recipe).counts
        over["counts"] = {k: (v if k == split else 0) for k, v in full.items()}
    print(f"generating {recipe} under {root} {over} ...", flush=True)
    t = time.time()
    make_benchmark(root, recipe=recipe, workers=workers, progress=True, **over)
    print(f"generated in {time.time() - t:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="mc-bench")
    ap.add_argument("--root", default=None, help="benchmark folder (default runs/bench/RECIPE)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--workers", type=int, default=2, help="generation workers")
    ap.add_argument(
        "--all-splits", action="store_true", help="generate every split, not only --split"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from napari_gravity.data.synthetic import load_benchmark

    root = Path(args.root or Path("runs") / "bench" / args.recipe)
    ensure_benchmark(root, args.recipe, args.workers, args.split, not args.all_splits)
    info = json.loads((root / "recipe.json").read_text())
    kind = info["recipe"]["kind"]
    polarity = "dark" if kind == "fundus" else "bright"
    refs = load_benchmark(root)[args.split]
    if args.limit:
        refs = refs[: args.limit]
    t = time.perf_counter()
    samples = [r.load() for r in refs]
    t_load = time.perf_counter() - t
    print(
        f"{len(samples)} {args.split} images ({kind}, {polarity} lesions), loaded in {t_load:.1f} s"
    )

    detectors = [HessianDoG(polarity=polarity), TopHat(polarity=polarity)]
    reports, results, timing, ncand, aufroc_drop = [], [], {}, {}, {}
    for det in detectors:
        dets = {}
        t = time.perf_counter()
        for s in samples:
            dets[s.image_id] = det.detect(s.image, mask=s.mask)
        dt = time.perf_counter() - t
        timing[det.name] = dt / len(samples)
        ncand[det.name] = float(np.mean([len(d) for d in dets.values()]))
        write_predictions_csv(root / f"predictions_{args.split}_{det.name}.csv", dets)
        rep, res = evaluate_detections(
            dets,
            samples,
            bootstrap=args.bootstrap,
            seed=args.seed,
            name=det.name,
            sensitivity_fppi=SENS_AT,
            return_result=True,
        )
        reports.append(rep)
        results.append(res)
        # the paper's reference code drops duplicates: report that variant too
        alt = froc_curve(
            dets,
            {s.image_id: s for s in samples},
            [s.image_id for s in samples],
            duplicates="drop",
            masks={s.image_id: s.mask for s in samples if s.mask is not None} or None,
        )
        aufroc_drop[det.name] = alt.aufroc(10.0)
        print(
            f"{det.name}: {timing[det.name]:.3f} s/image, {ncand[det.name]:.0f} candidates/image, "
            f"AUFROC_10 {100 * rep['aufroc']:.2f}%",
            flush=True,
        )
    cmp = compare_bootstrap(results[0], results[1], args.bootstrap or 1000, args.seed)
    paired = comparison_dict(cmp, detectors[0].name, detectors[1].name)
    print()
    print(report_markdown(reports, paired))

    out = Path(args.out or Path(__file__).parent / "results" / f"baselines_{args.recipe}.json")
    summary = {
        "recipe": args.recipe,
        "split": args.split,
        "images": len(samples),
        "lesions": results[0].n_lesions,
        "lesion_free_images": results[0].counts["lesion_free_images"],
        "protocol": {
            "match": "bbox (distance <= max(2 radius, 1) px)",
            "duplicates": "fp",
            "max_fppi": 10,
            "masks": "tissue mask of each sample",
            "bootstrap": args.bootstrap,
            "seed": args.seed,
        },
        "methods": {},
        "paired": paired,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for det, rep in zip(detectors, reports, strict=True):
        b = rep["bootstrap"] or {}
        summary["methods"][det.name] = {
            "params": {k: v for k, v in vars(det).items() if k != "name"},
            "aufroc_10": rep["aufroc"],
            "aufroc_10_ci": b.get("aufroc_ci"),
            "aufroc_10_duplicates_dropped": aufroc_drop[det.name],
            "sensitivity_at": rep["sensitivity_at"],
            "sensitivity_ci": {k: v["ci"] for k, v in b.get("sensitivity_at", {}).items()},
            "max_tpr": rep["tpr"][-1],
            "candidates_per_image": ncand[det.name],
            "seconds_per_image": timing[det.name],
            "counts": rep["counts"],
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
