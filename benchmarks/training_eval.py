"""Evaluate trained models against the classical baselines on a benchmark's held-out test split.

Runs, on the same test images and with the same FROC protocol (bbox criterion, duplicates = FP,
masks honoured, AUFROC_10): the given GravityNet model(s) (core Predictor, the prediction code
path), an optional RetinaNet comparator, and the classical Hessian-DoG and top-hat detectors; adds
1,000-resample case bootstraps (CIs) and paired comparisons of the first model against every
other method (ΔAUFROC, p = fraction of resamples with Δ <= 0).

Usage:
``python benchmarks/training_eval.py --test runs/trainer/mc-bench-test \
    --model default_mc=napari_gravity/models/default_mc.safetensors \
    [--retinanet runs/trainer/retinanet/model.safetensors] \
    --out benchmarks/results/training_default_mc.json``
(``--test`` is a make_benchmark folder; it is generated with only its test split when missing.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ensure_test(root: Path, recipe: str) -> None:
    if (root / "recipe.json").is_file():
        return
    from napari_gravity.data.synthetic import make_benchmark

    make_benchmark(
        root,
        recipe,
        format="folder",
        workers=2,
        overwrite=True,
        counts={"train": 0, "val": 0, "test": 100},
    )


def run_detector(name: str, det, samples, threshold=None) -> tuple[dict, float]:
    dets = {}
    t0 = time.perf_counter()
    for s in samples:
        if threshold is None:
            dets[s.image_id] = det.detect(s.image, mask=s.mask)
        else:
            dets[s.image_id] = det.detect(s.image, mask=s.mask, threshold=threshold)
    dt = (time.perf_counter() - t0) / max(len(samples), 1)
    print(
        f"  {name}: {dt:.2f} s/image, {np.mean([len(d) for d in dets.values()]):.0f} detections/image",
        flush=True,
    )
    return dets, dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test", required=True, help="benchmark folder with a test/ split")
    ap.add_argument("--recipe", default="mc-bench")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--retinanet", default=None)
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--offset", type=int, default=0, help="skip the first N test images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None, help="FROC plot path stem")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic import load_benchmark
    from napari_gravity.evaluation.bootstrap import bootstrap_froc, compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve
    from napari_gravity.evaluation.report import build_report, comparison_dict, report_markdown

    root = Path(args.test)
    ensure_test(root, args.recipe)
    refs = load_benchmark(root)["test"][args.offset :]
    if args.limit:
        refs = refs[: args.limit]
    samples = [r.load() for r in refs]
    ids = [s.image_id for s in samples]
    gt = {s.image_id: s for s in samples}
    masks = {s.image_id: s.mask for s in samples if s.mask is not None}
    recipe_info = json.loads((root / "recipe.json").read_text())
    print(f"{len(samples)} test images, {sum(len(s.points) for s in samples)} lesions", flush=True)

    methods: list[tuple[str, dict, float, dict]] = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        pred = Predictor.from_file(path, device="cpu")
        dets, dt = run_detector(name, pred, samples, threshold=pred.floor)
        methods.append((name, dets, dt, {"path": path, "threshold": pred.config.threshold}))
    if args.retinanet:
        from training.retinanet import load_retinanet

        det = load_retinanet(args.retinanet, device="cpu")
        dets, dt = run_detector("RetinaNet", det, samples, threshold=0.0)
        methods.append(("RetinaNet", dets, dt, {"path": args.retinanet}))
    if not args.no_classical:
        from napari_gravity.detectors import HessianDoG, TopHat

        for name, det in (("Hessian-DoG", HessianDoG()), ("top-hat", TopHat())):
            dets, dt = run_detector(name, det, samples)
            methods.append((name, dets, dt, {}))

    results = {}
    reports = []
    for name, dets, dt, extra in methods:
        res = froc_curve(dets, gt, ids, masks=masks or None)
        boot = bootstrap_froc(res, args.bootstrap, seed=0) if args.bootstrap else None
        rep = build_report(res, name=name, bootstrap=boot)
        rep["seconds_per_image_cpu"] = dt
        rep.update(extra)
        results[name] = res
        reports.append(rep)
    first = methods[0][0]
    paired = []
    for name, *_ in methods[1:]:
        cmp = compare_bootstrap(results[first], results[name], args.bootstrap or 1000, seed=0)
        paired.append(comparison_dict(cmp, first, name))
    classical = [r for r in reports if r["method"] in ("Hessian-DoG", "top-hat")]
    best_classical = max(classical, key=lambda r: r["aufroc"]) if classical else None
    summary = {
        "test": str(root),
        "recipe": recipe_info.get("recipe", {}).get("name"),
        "generator_version": recipe_info.get("generator_version"),
        "images": len(samples),
        "lesions": int(sum(len(s.points) for s in samples)),
        "lesion_free_images": int(sum(len(s.points) == 0 for s in samples)),
        "protocol": {
            "match": "bbox",
            "duplicates": "fp",
            "max_fppi": 10,
            "bootstrap": args.bootstrap,
            "seed": 0,
        },
        "methods": reports,
        "paired": paired,
        "best_classical": best_classical["method"] if best_classical else None,
        "machine": f"{platform.machine()} {platform.processor() or ''}, torch threads {args.threads}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.plot:  # from the full curves
        from napari_gravity.evaluation.plots import plot_froc

        title = f"{summary['recipe']} test split ({len(samples)} images)"
        plot_froc(reports, args.plot, formats=("png",), title=title)
    # keep the JSON small: the curve up to max_fppi (at most 1,000 points) plus its last point
    for rep in reports:
        fppi = [np.inf if v is None else v for v in rep["fppi"]]
        inside = [i for i, v in enumerate(fppi) if v <= rep["max_fppi"]]
        if len(inside) > 1000:
            inside = sorted(set(np.linspace(inside[0], inside[-1], 1000).astype(int).tolist()))
        keep = [*inside, len(fppi) - 1] if inside and inside[-1] != len(fppi) - 1 else inside
        for key in ("fppi", "tpr", "thresholds"):
            rep[key] = [rep[key][i] for i in keep]
    out.write_text(json.dumps(summary, indent=1, allow_nan=False, default=float))
    cmp0 = paired[0] if paired else None
    md = report_markdown(reports, cmp0)
    print(md)
    for p in paired:
        lo, hi = p["delta_ci"]
        print(
            f"Δ({p['a']} − {p['b']}) = {100 * p['delta_aufroc']:.2f} % (95% CI {100 * lo:.2f} to {100 * hi:.2f}), p = {p['p_value']:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
