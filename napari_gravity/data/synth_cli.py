"""``gravity synth``: generate synthetic / semi-real data sets and benchmark recipes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gravity synth`` on an argparse subparsers object."""
    from .synthetic.benchmark import RECIPES

    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic data set or a fixed benchmark recipe",
        description=(
            "Generate synthetic mammogram (microcalcification) or fundus (microaneurysm) images "
            "with their lesion points. With --recipe, a fixed benchmark (train/val/test folders, "
            "splits.json, test_ground_truth.csv); otherwise --n images of --kind in one folder. "
            "Recipes: " + "; ".join(f"{k}: {r.description}" for k, r in RECIPES.items())
        ),
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a fixed benchmark recipe")
    p.add_argument("--kind", choices=["mammogram", "fundus"], default="mammogram")
    p.add_argument(
        "--n", type=int, default=None, help="number of images (without --recipe; default 16)"
    )
    p.add_argument(
        "--size", type=int, nargs="+", default=None, metavar="PX", help="image size: S or H W"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the recipe's, or 0)"
    )
    p.add_argument("--format", choices=["folder", "inbreast", "eophtha"], default="folder")
    p.add_argument(
        "--semi-real", type=float, default=None, help="fraction of images on real backgrounds"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .synthetic.benchmark import Recipe, get_recipe, make_benchmark

    size = None
    if args.size:
        if len(args.size) not in (1, 2) or min(args.size) < 16:
            raise ValueError(f"--size: give S or H W (each at least 16), got {args.size}")
        size = (args.size[0], args.size[-1])
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be positive, got {args.n}")
    if args.recipe:
        rec = get_recipe(args.recipe, size=size, seed=args.seed, semi_real=args.semi_real)
        if args.n is not None:
            # scale every split to keep the recipe's proportions
            total = sum(rec.counts.values())
            counts = {k: max(1, round(v * args.n / total)) for k, v in rec.counts.items()}
            rec = get_recipe(rec, counts=counts)
    else:
        n = args.n or 16
        rec = Recipe(
            name=f"custom-{args.kind}",
            kind=args.kind,
            size=size or (512, 512),
            counts={"train": n, "val": 0, "test": 0},
            images_per_patient=4,
            semi_real=args.semi_real or 0.0,
            seed=0 if args.seed is None else args.seed,
            description=f"{n} {args.kind} images",
        )
    info = make_benchmark(
        args.out,
        rec,
        args.format,
        workers=max(1, args.workers),
        progress=True,
        flat=not args.recipe,
        overwrite=args.overwrite,
    )
    summary = {k: info[k] for k in ("counts", "lesions", "seconds_total")}
    print(f"gravity synth: wrote {rec.name} ({args.format}) to {args.out}: {json.dumps(summary)}")
    return 0
