"""An outside lesion model (``foreign_mc.py``, or ``--outside b`` / ``c`` / ``d``) on the TRAINING patient's films, written as a
train / val folder the trainer reads: a diagnostic of how much of a model's gap on that
model is a domain gap (fine-tune on it, test on the held-out patient with ``foreign_mc.py``).
Never a training set for a shipped model: the outside model is a test.

    python benchmarks/foreign_train_set.py --out data/foreign-train
    gravity train robust_mc_cpu --out runs/diag --init default_mc --set data.synthetic=null \\
        --set data.root=data/foreign-train --set train.lr=3e-4 --set train.max_steps_per_epoch=40 \\
        --set eval.max_images=32 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-spacing", type=int, nargs=2, default=(40, 8), help="train, val")
    ap.add_argument(
        "--outside",
        choices=("a", "b", "c", "d", "ma"),
        default="a",
        help="which outside model: foreign_mc.py (a), foreign_mc_b.py (b), foreign_mc_c.py (c), foreign_mc_d.py (d), foreign_ma.py (ma: the retina's top / middle third)",
    )
    args = ap.parse_args()

    import importlib

    import tifffile

    module = {
        "a": "foreign_mc",
        "b": "foreign_mc_b",
        "c": "foreign_mc_c",
        "d": "foreign_mc_d",
        "ma": "foreign_ma",
    }[args.outside]
    build = importlib.import_module(module).build

    from napari_gravity.data.annotations import write_points_csv

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: folder is not empty")
    counts = {}
    for split, n, seed in (("train", args.per_spacing[0], 7), ("val", args.per_spacing[1], 8)):
        if args.outside == "ma":  # the retina's training thirds, never the bottom one
            samples, _ = build(n, seed, region="top" if split == "train" else "middle")
        else:
            samples, _ = build(n, seed, case="sfm-benign-0")
        d = out / split
        d.mkdir(parents=True)
        for i, s in samples.items():
            tifffile.imwrite(d / f"{i}.tif", s.image.astype(np.uint16))
            write_points_csv(d / f"{i}.csv", s.points, s.radii)
        counts[split] = len(samples)
    # the trainer recognises a benchmark folder by its recipe.json
    recipe = {"recipe": {"name": "foreign-train", "kind": "outside lesion model"}, "counts": counts}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    print(f"wrote {out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
