"""Shared harness of ``ma_camera.py`` and ``mc_camera.py``: images written to files in several
ways, each taken through what ``gravity predict default`` does with a file, and scored back in
the original image's pixels against its lesions (paired against a reference way of writing).

A :class:`Variant` makes the array to write from the original, writes it, and maps detections
back. :func:`run_variants` routes each file (``core.task.guess_task_file``), reads it and
computes its mask with ``gravity predict``'s own reader (``ImageInputs``: an inverted mammogram
is inverted back there), and runs the bundled model of that task
(field-of-view resampling and the area rule included). :func:`score_variants` scores each
variant on the lesions it still shows, paired against the first variant on the same lesions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_io import machine, save_json


def _ident(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return p


def _all(shape: tuple[int, int]) -> np.ndarray:
    return np.ones(shape, bool)


@dataclass
class Variant:
    """One way of writing an image: ``make(original, rng)`` gives the array, ``write(path,
    array)`` (default: imageio with ``options``) the file, ``back(points, original shape)`` maps
    (y, x) in the file's pixels to the original's, ``visible(shape)`` marks the original pixels
    the file still shows."""

    name: str
    ext: str
    make: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    back: Callable[[np.ndarray, tuple[int, int]], np.ndarray] = _ident
    visible: Callable[[tuple[int, int]], np.ndarray] = _all
    options: dict | None = None
    write: Callable[[Path, np.ndarray], None] | None = None


def inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which (y, x) points fall on a True pixel of ``mask`` (False outside the image)."""
    q = np.floor(np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5).astype(int)
    h, w = mask.shape
    ok = (q[:, 0] >= 0) & (q[:, 0] < h) & (q[:, 1] >= 0) & (q[:, 1] < w)
    ok[ok] = mask[q[ok, 0], q[ok, 1]]
    return ok


def select(variants: list[Variant], only: str | None) -> list[Variant]:
    """The variants named in ``only`` (semicolon-separated), always with the reference."""
    if not only:
        return variants
    keep = set(only.split(";"))
    return [v for v in variants if v.name in keep or v is variants[0]]


def run_variants(images: list, variants: list[Variant], seed: int) -> dict[str, dict]:
    """``{variant: {dets, at_gamma, routes, zoom, seconds}}`` for ``images`` =
    [(Sample, original array)]: detections at the model's floor and at the γ it uses."""
    import imageio.v3 as iio

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.core.task import guess_task_file
    from training.predict_cli import ImageInputs

    preds = {t: Predictor.from_file(default_model_path(t), device="cpu") for t in ("ma", "mc")}
    rng = np.random.default_rng(seed)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            dets_all, dets_gamma, routes, zooms, notes = {}, {}, {}, [], {}
            t1 = time.time()
            for s, src in images:
                arr = v.make(src, rng)
                path = Path(tmp) / f"{s.image_id}{v.ext}"
                if v.write is not None:
                    v.write(path, arr)
                else:
                    iio.imwrite(path, arr, **(v.options or {}))
                task, why = guess_task_file(path)
                routes[s.image_id] = f"{task}: {why}"
                # read and masked as gravity predict reads and masks a file (its reader workers)
                loaded = ImageInputs([path], [s.image_id], mask_mode="auto", task=task)[0]
                if loaded.error is not None:
                    raise RuntimeError(loaded.error)
                img, mask = loaded.image, loaded.mask
                if loaded.note:
                    notes[s.image_id] = loaded.note
                pred = preds[task]
                raw = pred.raw(img, mask)
                zooms.append(raw.zoom)
                for store, thr in ((dets_all, pred.floor), (dets_gamma, None)):
                    d = pred.from_raw(raw, mask, threshold=thr)
                    d.points = v.back(d.points, s.image.shape)
                    store[s.image_id] = d
                path.unlink()
            runs[v.name] = {
                "dets": dets_all,
                "at_gamma": dets_gamma,
                "routes": routes,
                "zoom": [round(z, 3) for z in zooms],
                "notes": notes,
                "seconds": round(time.time() - t1, 1),
            }
            print(f"[run] {v.name}: {runs[v.name]['seconds']} s", flush=True)
    return runs


def score_variants(
    images: list, variants: list[Variant], runs: dict[str, dict], n_boot: int
) -> dict[str, dict]:
    """AUFROC_10 (bootstrap CI) of each variant on the lesions it shows, paired Δ against the
    first variant on the same lesions, FPpI and sensitivity at the γ the model uses."""
    from napari_gravity.evaluation.bootstrap import bootstrap_froc, compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve, match_image
    from napari_gravity.types import Sample

    ref = variants[0].name
    ids = [s.image_id for s, _ in images]
    rows = {}
    for v in variants:
        gts, masks = {}, {}
        for s, _ in images:
            vis = v.visible(s.image.shape) & s.mask
            ok = inside(s.points, vis)  # the lesions this variant still shows
            gts[s.image_id] = Sample(image=s.image, points=s.points[ok], radii=s.radii[ok])
            masks[s.image_id] = vis
        res = froc_curve(runs[v.name]["dets"], gts, ids, masks=masks)
        base = froc_curve(runs[ref]["dets"], gts, ids, masks=masks)
        boot = bootstrap_froc(res, n_boot, seed=0)
        cmp = compare_bootstrap(res, base, n_boot, seed=0)
        fp = tp = n = 0
        for s, _ in images:
            d = runs[v.name]["at_gamma"][s.image_id]
            vis, g = masks[s.image_id], gts[s.image_id]
            keep = inside(d.points, vis)
            lab = match_image(d.points[keep], d.scores[keep], g.points, g.radii, mask=vis)
            fp += int(np.sum(lab.labels == 0))
            tp += lab.n_tp
            n += len(g.points)
        rows[v.name] = {
            "aufroc_10": round(res.aufroc(10.0), 4),
            "aufroc_10_ci95": [round(x, 4) for x in boot.aufroc_ci],
            "reference_same_lesions": round(base.aufroc(10.0), 4),
            "delta_vs_reference": round(float(cmp.observed_delta), 4),
            "delta_ci95": [round(x, 4) for x in cmp.delta_ci],
            "fppi_at_gamma": round(fp / len(images), 2),
            "sensitivity_at_gamma": round(tp / max(n, 1), 3),
            "lesions": n,
            "routes": sorted(set(runs[v.name]["routes"].values())),
            "zoom": runs[v.name]["zoom"],
            "notes": sorted(set(runs[v.name]["notes"].values())),
            "seconds": runs[v.name]["seconds"],
        }
    return rows


def print_rows(rows: dict[str, dict]) -> None:
    """The table: AUFROC_10, Δ against the reference (first row), FPpI / sensitivity at γ, route."""
    print(
        f"\n{'variant':<42} {'AUFROC_10':>9} {'Δ vs reference (95% CI)':>26} {'FPpI/sens @γ':>14}"
    )
    for name, r in rows.items():
        lo, hi = r["delta_ci95"]
        print(
            f"{name:<42} {100 * r['aufroc_10']:9.1f} "
            f"{100 * r['delta_vs_reference']:+9.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"
            f"   {r['fppi_at_gamma']:5.2f}/{r['sensitivity_at_gamma']:4.0%}  "
            + "; ".join(r["routes"])
        )


def add_arguments(ap: argparse.ArgumentParser, seed: int, out: Path) -> None:
    """``--seed``, ``--bootstrap``, ``--only`` and ``--out`` of a file-variants benchmark."""
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument(
        "--only",
        default=None,
        help="variant names separated by semicolons (a subset; the reference always runs)",
    )
    ap.add_argument("--out", default=str(out))


def run_and_save(args: argparse.Namespace, images: list, variants: list[Variant], about: dict):
    """Run, score, print and save the selected variants; ``about`` heads the JSON."""
    from napari_gravity.core.registry import default_model_path

    t0 = time.time()
    todo = select(variants, args.only)
    runs = run_variants(images, todo, args.seed)
    rows = score_variants(images, todo, runs, args.bootstrap)
    print_rows(rows)
    out = {
        **about,
        "models": {t: str(default_model_path(t)) for t in ("ma", "mc")},
        "seed": args.seed,
        "seconds": round(time.time() - t0, 1),
        "machine": machine(),
        "variants": rows,
    }
    save_json(out, args.out)
    return 0
