"""Time the FROC matching and the vectorised bootstrap at the scale of the issue.

    .venv/bin/python benchmarks/bootstrap.py [--images 400] [--predictions 100000]
        [--resamples 1000] [--out benchmarks/results/bootstrap.json]

Synthetic detector output: ``--images`` images, a quarter lesion-free, 0-30 lesions on the
others, ``--predictions`` predictions spread over the images (most of them FPs, some near
lesions, some duplicates). Prints a table and writes the timings as JSON.
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

from napari_gravity.evaluation import bootstrap as bs
from napari_gravity.evaluation import bootstrap_froc, compare_bootstrap, froc_curve


def synthetic_ground_truth(n_images: int, seed: int):
    rng = np.random.default_rng(seed)
    gt = {}
    for i in range(n_images):
        n_les = int(rng.integers(1, 31)) if i % 4 else 0
        gt[f"im{i:04d}"] = (rng.uniform(0, 512, (n_les, 2)), rng.uniform(0.7, 6.8, n_les))
    return gt


def synthetic_outputs(gt, n_pred: int, seed: int, quality: float):
    rng = np.random.default_rng(seed)
    pred = {}
    per = rng.multinomial(n_pred, np.ones(len(gt)) / len(gt))
    for i, (iid, (les, _)) in enumerate(gt.items()):
        n_les = len(les)
        n = int(per[i])
        pts = rng.uniform(0, 512, (n, 2))
        sc = rng.beta(1, 4, n)
        k = min(n_les, n // 4)
        hit = rng.random(k) < quality
        pts[:k][hit] = les[:k][hit] + rng.normal(0, 1, (int(hit.sum()), 2))
        sc[:k][hit] = rng.beta(4, 2, int(hit.sum()))
        pred[iid] = (pts, sc)
    return pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--predictions", type=int, default=100_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (the best is kept)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bootstrap.json"))
    args = ap.parse_args(argv)

    gt = synthetic_ground_truth(args.images, args.seed)
    pred = synthetic_outputs(gt, args.predictions, args.seed + 1, 0.8)
    pred_b = synthetic_outputs(gt, args.predictions, args.seed + 2, 0.7)

    def best(fn):
        times, out = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_match, res = best(lambda: froc_curve(pred, gt))
    res_b = froc_curve(pred_b, gt)
    t_boot, boot = best(lambda: bootstrap_froc(res, args.resamples, args.seed))
    t_pair, cmp = best(lambda: compare_bootstrap(res, res_b, args.resamples, args.seed))
    # the same bootstrap without the score-prefix shortcut (every prediction in every resample)
    orig = bs._truncate
    bs._truncate = lambda *a, **k: None
    try:
        t_full, boot_full = best(lambda: bootstrap_froc(res, args.resamples, args.seed))
    finally:
        bs._truncate = orig
    if not np.allclose(boot_full.aufroc, boot.aufroc, atol=1e-12, equal_nan=True):
        raise SystemExit("prefix shortcut and full evaluation disagree")
    lo, hi = boot.aufroc_ci
    rows = [
        ("froc_curve (matching + curve)", t_match),
        (f"bootstrap_froc ({args.resamples} resamples)", t_boot),
        (f"compare_bootstrap (2 methods, {args.resamples} resamples)", t_pair),
        (f"bootstrap_froc, no prefix shortcut ({args.resamples})", t_full),
    ]
    print(
        f"{args.images} images, {args.predictions} predictions, {res.n_lesions} lesions, "
        f"{os.cpu_count()} CPU(s), best of {args.repeats}"
    )
    print(f"| {'step':<48} | seconds |")
    print(f"|{'-' * 50}|---------|")
    for name, t in rows:
        print(f"| {name:<48} | {t:7.3f} |")
    print(
        f"AUFROC_10 = {res.aufroc():.4f} (95% CI {lo:.4f}-{hi:.4f}); "
        f"ΔAUFROC vs second method = {cmp.observed_delta:.4f}, p = {cmp.p_value:.3f}"
    )
    out = {
        "images": args.images,
        "predictions": args.predictions,
        "lesions": res.n_lesions,
        "resamples": args.resamples,
        "seed": args.seed,
        "seconds": {
            "froc_curve": round(t_match, 4),
            "bootstrap_froc": round(t_boot, 4),
            "compare_bootstrap": round(t_pair, 4),
            "bootstrap_froc_without_prefix_shortcut": round(t_full, 4),
        },
        "aufroc_10": res.aufroc(),
        "aufroc_10_ci": [lo, hi],
        "delta_aufroc": cmp.observed_delta,
        "p_value": cmp.p_value,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "note": "shared 2-core machine; other jobs may have been running",
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
