"""Paired comparison of models on a folder of labelled images: how candidates are chosen.

The images of one or more folders (any format ``open_dataset`` reads; e.g. an outside model
rendered on the training patient or the retina's training thirds by
``foreign_train_set.py``, never a test split) go through top-hat, Hessian-DoG and each
``--model NAME=PATH[,tta=MODE]``; AUFROC_10 with bootstrap CIs and the paired Δ of every model
against ``--versus``.

Usage: ``python benchmarks/compare_on_folder.py data/foreignMA-train/train
data/foreignMA-train/val --polarity dark --model v1=OLD --model v2=NEW --versus v1
--out benchmarks/results/ma_v2_dev.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import save_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH[,tta=MODE]")
    ap.add_argument("--versus", default=None)
    ap.add_argument("--polarity", choices=("bright", "dark"), default="bright")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from robustness import evaluate, print_subsets, run_methods

    from napari_gravity.data.datasets import open_dataset

    torch.set_num_threads(2)
    refs = [r for f in args.folders for r in open_dataset(f)]
    samples = {r.image_id: r.load() for r in refs}
    ids = list(samples)
    name = "dev: " + ", ".join(args.folders)
    methods = run_methods(samples, ids, args.polarity, args.model)
    res = evaluate({name: ids}, samples, methods, args.bootstrap, args.versus)
    print_subsets(res, list(methods))
    save_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
