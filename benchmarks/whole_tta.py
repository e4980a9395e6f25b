"""Test-time augmentation on whole mammograms: one pass (the default above 2.5 megapixels)
against 4 views (flips) and 8 views (d8), and the one pass's dependence on orientation.

``tta="auto"`` averages 8 views only on images up to 2.5 MP (tiles, crops); a whole mammogram
gets one pass, for speed (issue 10's CPU bar). This measures what that costs, in one run on the
same images: AUFROC_10 per mode with paired Δ against one pass, FPpI / sensitivity at each
mode's calibrated γ (area rule), seconds per image (2 CPU threads), and the one pass on the
mirrored and the turned image (points mapped back).

Sets: the held-out patient's four real film views with calcifications over the whole breast
(``mc_camera.build``, two draws), the training patient's four (one draw; their backgrounds were
seen in training), and synthetic CC-like full mammograms (``cpu_detect.cc_phantom``).

Usage: ``python benchmarks/whole_tta.py [--out benchmarks/results/whole_tta.json]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import machine, save_json  # noqa: E402


def sets(seed: int) -> dict[str, list]:
    import mc_camera
    from cpu_detect import cc_phantom

    from napari_gravity.types import Sample

    out = {"real films, held-out patient (8)": mc_camera.build(2, 7272)}  # mc_camera's draws
    held = mc_camera.CASE
    mc_camera.CASE = "sfm-benign-0"
    out["real films, training patient (4)"] = mc_camera.build(1, seed)
    mc_camera.CASE = held
    syn = []
    for k in range(4):
        img, mask, s = cc_phantom((2400, 1800), seed=100 + k)
        syn.append(
            (Sample(image=img, points=s.points, radii=s.radii, mask=mask, image_id=f"syn{k}"), img)
        )
    out["synthetic full mammograms (4)"] = syn
    return out


def orient(img: np.ndarray, how: str) -> np.ndarray:
    return {"native": img, "mirrored": img[:, ::-1], "turned": np.rot90(img)}[how].copy()


def back(p: np.ndarray, shape: tuple[int, int], how: str) -> np.ndarray:
    if how == "mirrored":
        return np.column_stack([p[:, 0], shape[1] - 1 - p[:, 1]])
    if how == "turned":  # np.rot90(a)[i, j] == a[j, W - 1 - i]
        return np.column_stack([p[:, 1], shape[1] - 1 - p[:, 0]])
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=8383)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/whole_tta.json"))
    args = ap.parse_args(argv)

    import torch

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.masks import breast_mask
    from napari_gravity.evaluation.bootstrap import bootstrap_froc, compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve, match_image

    torch.set_num_threads(2)
    path = default_model_path("mc")
    runs = [
        ("off", "native"),
        ("off", "mirrored"),
        ("off", "turned"),
        ("flips", "native"),
        ("d8", "native"),
    ]
    report = {}
    for name, images in sets(args.seed).items():
        masks = {s.image_id: s.mask for s, _ in images}
        gts = {s.image_id: s for s, _ in images}
        ids = list(gts)
        res, rows = {}, {}
        for mode, how in runs:
            pred = Predictor.from_file(path, device="cpu", tta=mode)
            dets, fp, tp, n, t0 = {}, 0, 0, 0, time.time()
            for s, img in images:
                a = orient(img, how)
                m = breast_mask(a)
                raw = pred.raw(a, m)
                d = pred.from_raw(raw, m, threshold=pred.floor)
                g = pred.from_raw(raw, m)
                d.points = back(d.points, img.shape, how)
                g.points = back(g.points, img.shape, how)
                dets[s.image_id] = d
                lab = match_image(g.points, g.scores, s.points, s.radii, mask=s.mask)
                fp += int(np.sum(lab.labels == 0))
                tp += lab.n_tp
                n += len(s.points)
            label = f"{mode}, {how}"
            res[label] = froc_curve(dets, gts, ids, masks=masks)
            boot = bootstrap_froc(res[label], args.bootstrap, seed=0)
            rows[label] = {
                "aufroc_10": round(res[label].aufroc(10.0), 4),
                "aufroc_10_ci95": [round(x, 4) for x in boot.aufroc_ci],
                "fppi_at_gamma": round(fp / len(images), 2),
                "sensitivity_at_gamma": round(tp / max(n, 1), 3),
                "seconds_per_image": round((time.time() - t0) / len(images), 2),
            }
            if label != "off, native":
                c = compare_bootstrap(res[label], res["off, native"], args.bootstrap, seed=0)
                rows[label]["delta_vs_one_pass"] = round(float(c.observed_delta), 4)
                rows[label]["delta_ci95"] = [round(x, 4) for x in c.delta_ci]
            r = rows[label]
            print(
                f"{name:<36} {label:<16} AUFROC {100 * r['aufroc_10']:5.1f}"
                + (
                    f"  Δ {100 * r['delta_vs_one_pass']:+5.1f} "
                    f"({100 * r['delta_ci95'][0]:+.1f} to {100 * r['delta_ci95'][1]:+.1f})"
                    if "delta_vs_one_pass" in r
                    else " " * 27
                )
                + f"  FPpI/sens at γ {r['fppi_at_gamma']:5.1f}/{r['sensitivity_at_gamma']:4.0%}"
                f"  {r['seconds_per_image']:.1f} s/img",
                flush=True,
            )
        report[name] = {
            "images": len(images),
            "lesions": int(sum(len(s.points) for s, _ in images)),
            "shapes": sorted({f"{img.shape[0]}x{img.shape[1]}" for _, img in images}),
            "runs": rows,
        }
    out = {
        "benchmark": "test-time augmentation on whole mammograms",
        "what": __doc__.split("\n\n")[0],
        "model": str(path),
        "machine": machine(),
        "sets": report,
    }
    save_json(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
