"""``gravity demo``: the headless equivalent of opening napari with a sample.

Synthesises a sample mammogram with known microcalcifications (the data package's generator),
detects them with the bundled default model (or a classical detector when no model is installed),
evaluates against the ground truth, prints a short table and writes everything to a folder:
``sample.tif`` (16-bit), ``sample.csv`` (ground truth, y,x,radius), ``predictions.csv``,
``ground_truth.csv``, ``report.json``, ``report.md`` and ``froc.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_gravity.fileio import atomic_write, atomic_write_text


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="synthesise a sample mammogram, detect, evaluate (no GUI)",
        description="Synthesise -> detect (default model or classical) -> evaluate, in seconds.",
    )
    p.add_argument("--out", default="gravity-demo", help="output folder (default ./gravity-demo)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic sample")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"))
    p.add_argument("--n-images", type=int, default=2, help="how many samples to synthesise")
    p.add_argument("--model", default="default", help="model file/registry name, or 'classical'")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)
    return p


def _detectors(model: str, device: str) -> list[tuple[str, Any]]:
    """[(name, detector)]: the model (if any) and the classical baselines."""
    out: list[tuple[str, Any]] = []
    if model != "classical":
        try:
            from training.predict_cli import load_detector

            det, _md, _thr, path = load_detector(model, device)
            out.append((f"GravityNet ({Path(path).name})", det))
        except (ValueError, FileNotFoundError) as exc:
            print(f"gravity demo: no model ({exc}); using the classical detectors only")
    try:
        from napari_gravity.detectors import HessianDoG, TopHat  # type: ignore[attr-defined]

        out.append(("Hessian-DoG", HessianDoG()))
        out.append(("top-hat", TopHat()))
    except ImportError:
        try:
            from napari_gravity.detectors.hdog import HessianDoG

            out.append(("Hessian-DoG", HessianDoG()))
        except ImportError:
            pass
    if not out:
        raise RuntimeError("no detector available (no model and no classical detector)")
    return out


def run(args: argparse.Namespace) -> int:
    from napari_gravity.data.synthetic import synth_mammogram
    from napari_gravity.evaluation.io import write_ground_truth_csv, write_predictions_csv
    from napari_gravity.evaluation.report import evaluate_detections, report_markdown, write_json

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    samples = []
    for k in range(max(1, args.n_images)):
        s = synth_mammogram(
            tuple(args.size),
            seed=int(rng.integers(0, 2**31 - 1)),
            image_id=f"sample{k}",
            patient_id=f"demo{k}",
            has_lesions=True,
            breast=False,
        )
        samples.append(s)
    _write_samples(out, samples)
    write_ground_truth_csv(out / "ground_truth.csv", samples)
    reports = []
    timings: dict[str, float] = {}
    for name, det in _detectors(args.model, args.device):
        t1 = time.perf_counter()
        dets = {}
        for s in samples:
            try:
                dets[s.image_id] = det.detect(s.image, mask=s.mask, threshold=0.0)
            except TypeError:  # classical detectors take no threshold
                dets[s.image_id] = det.detect(s.image, mask=s.mask)
        timings[name] = (time.perf_counter() - t1) / len(samples)
        safe = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
        write_predictions_csv(out / f"predictions_{safe}.csv", dets)
        if not reports:
            write_predictions_csv(out / "predictions.csv", dets)
        rep = evaluate_detections(dets, samples, name=name)
        reports.append(rep)
    md = report_markdown(reports)
    atomic_write_text(out / "report.md", md)
    write_json(out / "report.json", {"reports": reports, "seconds_per_image": timings})
    try:
        from napari_gravity.evaluation.plots import plot_froc

        plot_froc(
            reports, out / "froc", formats=("png",), title="gravity demo: synthetic mammograms"
        )
    except Exception as exc:  # the numbers are already written
        print(f"gravity demo: FROC plot skipped ({exc})")
    n_les = sum(len(s.points) for s in samples)
    print(
        f"gravity demo: {len(samples)} synthetic mammogram(s) {args.size[0]}x{args.size[1]}, {n_les} microcalcifications"
    )
    print(f"{'detector':<36} {'AUFROC_10':>9} {'TPR@1FPpI':>9} {'s/image':>8}")
    for rep in reports:
        sens = rep["sensitivity_at"].get("1", float("nan"))
        print(
            f"{rep['method']:<36} {rep['aufroc']:>9.3f} {sens:>9.3f} {timings[rep['method']]:>8.2f}"
        )
    print(f"gravity demo: outputs in {out} ({time.time() - t0:.1f} s)")
    summary = {"seconds": time.time() - t0, "n_lesions": n_les}
    atomic_write_text(out / "demo.json", json.dumps(summary))
    return 0


def _write_samples(out: Path, samples: list) -> None:
    """16-bit TIFF images with their point CSVs (a generic-folder dataset the GUI can open)."""
    import tifffile

    from napari_gravity.data.annotations import write_points_csv

    for s in samples:
        img = np.clip(s.image, 0, 65535).astype(np.uint16)
        atomic_write(out / f"{s.image_id}.tif", lambda tmp, img=img: tifffile.imwrite(tmp, img))
        write_points_csv(out / f"{s.image_id}.csv", s.points, s.radii)
