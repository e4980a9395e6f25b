"""GPU detection benchmark for a full mammogram (issue 10's CUDA figures), one run, same images.

On a CC-like synthetic 3328×2560 mammogram with its breast mask (``cc_phantom`` of
``cpu_detect.py``) and the shipped ``default_mc`` model, interleaved, medians of ``--repeats``
after a warm-up, with ``torch.cuda.synchronize()`` around every timing:

- the network forward alone on the breast crop (features + head maps, channels-last, under the
  predictor's autocast), the reference of every ratio;
- ``Predictor.detect(img, mask)`` end to end on the lean path (``postprocess="device"``, the
  default), the cached host path (``postprocess="host"``, cache cleared before each call), and
  ``raw()`` + ``from_raw()`` separately (then a γ change from the cache);
- stages: tissue mask (host), normalisation (to the device), forward + paste into image-sized
  maps, device post-processing (decode, threshold, NMS, mask, copy of the survivors), host
  decoding (the 532k-point copies) and host γ/NMS;
- batched throughput ``detect_batch([img]*B, [mask]*B)`` for B in ``--batches`` (each image
  shifted by a different constant, so nothing is shared), images/s and peak device memory;
- with ``--compile``: ``torch.compile`` of the forward (compile time, median, largest difference).

Usage: ``python benchmarks/gpu_detect.py [--device cuda] [--repeats 5] [--compile] [--out DIR]``;
``--device cpu --quick`` (1024×768 phantom, one repeat, B in 1, 2) is the CPU rehearsal.
Prints a table and writes ``benchmarks/results/gpu_detect_<device>.json`` (not for ``--quick``)
and ``DIR/gpu_detect_<device>.json`` with ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_detect import cc_phantom  # noqa: E402

from napari_gravity.core.postprocess import decode  # noqa: E402
from napari_gravity.core.predictor import (  # noqa: E402
    Predictor,
    crop_box,
    resolve_device,
    select_on_device,
)
from napari_gravity.core.registry import default_model_path  # noqa: E402
from napari_gravity.data.masks import tissue_mask  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FORWARD = "forward on the crop (network alone)"


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Wall seconds of one call, the device synchronised before and after."""
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def _crop_input(pred: Predictor, img, mask):
    """(crop box, the network's input on the device): the normalised image cut to the breast
    box, channels-last, as ``Predictor`` feeds it."""
    c = pred.config
    box = crop_box(mask, img.shape, c.stride, pred.crop_margin)
    y0, y1, x0, x1 = box or (0, img.shape[0], 0, img.shape[1])
    with torch.inference_mode():
        x = pred._normalized(img, c.normalization)[None, None, y0:y1, x0:x1]
        return box, x.contiguous(memory_format=torch.channels_last)


def single_image(pred: Predictor, host: Predictor, img, mask, repeats: int) -> dict:
    """Interleaved medians of every single-image variant and stage."""
    sync = _sync_for(pred.device)
    c, model = pred.config, pred.model
    box, x = _crop_input(pred, img, mask)
    y0, y1, x0, x1 = box or (0, img.shape[0], 0, img.shape[1])
    with torch.inference_mode():
        gp = model.points_for(img.shape, pred.device)
    thr, nms_box, iou = c.threshold, c.nms_box, c.nms_iou
    state: dict = {}

    def forward_only():
        with pred._autocast():
            return model.head_maps(model.features(x))

    def forward_paste():
        state["out"] = pred._forward([img], img.shape, box, None, 0.0, 1.0)

    def post_device():
        logits, offsets = state["out"]
        pts = decode(gp, offsets[0].float(), c.d_h)
        sc = torch.sigmoid(logits[0].float())
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(pred.device, non_blocking=True)
        return select_on_device(pts, sc, img.shape, thr, nms_box, iou, m)

    def decode_host():
        logits, offsets = state["out"]
        state["raw"] = host._decode(logits[0], offsets[0], gp, img.shape, "bench")

    def select_host():
        return host.from_raw(state["raw"], mask, thr)

    def host_detect():
        host.clear_cache()
        return host.detect(img, mask)

    def raw_only():
        host.clear_cache()
        state["raw2"] = host.raw(img, mask)

    variants: dict[str, Callable[[], object]] = {
        FORWARD: forward_only,
        "detect, lean (postprocess='device')": lambda: pred.detect(img, mask),
        "detect, host path (cache cleared)": host_detect,
        "raw() (cache cleared)": raw_only,
        "from_raw() after raw()": lambda: host.from_raw(state["raw2"], mask),
        "from_raw(), γ change (cached NMS)": lambda: host.from_raw(
            state["raw2"], mask, threshold=0.9 * thr
        ),
        "stage: tissue mask (host)": lambda: tissue_mask(img, "mc"),
        "stage: normalisation to the device": lambda: pred._normalized(img, c.normalization),
        "stage: forward + paste into image maps": forward_paste,
        "stage: post-processing on the device": post_device,
        "stage: host decode (copies of all points)": decode_host,
        "stage: host γ/NMS/mask": select_host,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for f in variants.values():  # warm-up: allocator, cuDNN algorithms, NMS kernels
            timed(f, sync)
        for _ in range(repeats):
            for k, f in variants.items():
                times[k].append(timed(f, sync))
        lean = pred.detect(img, mask)
        hosted = host.from_raw(host.raw(img, mask), mask)
    med = {k: statistics.median(v) for k, v in times.items()}
    agree = len(lean) == len(hosted) and bool(
        np.allclose(lean.points, hosted.points, atol=1e-3)
        and np.allclose(lean.scores, hosted.scores, atol=1e-5)
    )
    h, w = img.shape
    return {
        "shape": [h, w],
        "breast_fraction": float(np.mean(mask)),
        "crop_box": None if box is None else [int(v) for v in box],
        "crop_fraction": float((y1 - y0) * (x1 - x0) / (h * w)),
        "n_gravity_points": int(gp.shape[0]),
        "detections": {"lean": len(lean), "host": len(hosted), "agree": agree},
        "seconds_median": med,
        "seconds_all": times,
        "ratio_to_forward": {k: v / med[FORWARD] for k, v in med.items()},
    }


def batched(pred: Predictor, img, mask, sizes: list[int], repeats: int) -> list[dict]:
    """``detect_batch`` throughput for each batch size (stops at the first out-of-memory)."""
    sync = _sync_for(pred.device)
    cuda = pred.device.type == "cuda"
    rows = []
    for b in sizes:
        imgs = [img + np.float32(0.5 * (k + 1)) for k in range(b)]
        masks = [mask] * b
        row: dict = {"batch": b}
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(pred.device)
            run = functools.partial(pred.detect_batch, imgs, masks)
            timed(run, sync)  # warm-up for this shape
            ts = [timed(run, sync) for _ in range(repeats)]
        except torch.cuda.OutOfMemoryError as exc:
            row["error"] = f"out of memory: {str(exc)[:200]}"
            rows.append(row)
            print(f"  batch {b}: out of memory, larger batches skipped", flush=True)
            break
        med = statistics.median(ts)
        row.update(
            seconds_median=med,
            seconds_all=ts,
            images_per_s=b / med,
            seconds_per_image=med / b,
            peak_mem_mib=(torch.cuda.max_memory_allocated(pred.device) / 2**20) if cuda else None,
        )
        rows.append(row)
        print(f"  batch {b:3d}: {med:8.3f} s  {b / med:8.2f} images/s", flush=True)
        del imgs, run
    return rows


def compiled_forward(pred: Predictor, img, mask, repeats: int) -> dict:
    """``torch.compile`` (inductor, static shape) of the crop's forward: compile time, median,
    eager median in the same run and the largest output difference."""
    sync = _sync_for(pred.device)
    model = pred.model
    _box, x = _crop_input(pred, img, mask)

    def eager():
        with pred._autocast():
            return model.head_maps(model.features(x))

    fn = torch.compile(lambda t: model.head_maps(model.features(t)), dynamic=False)

    def comp():
        with pred._autocast():
            return fn(x)

    with torch.inference_mode():
        t_compile = timed(comp, sync)
        timed(eager, sync)
        e_ts, c_ts = [], []
        for _ in range(repeats):
            e_ts.append(timed(eager, sync))
            c_ts.append(timed(comp, sync))
        a, b = eager(), comp()
        diff = max(float((p.float() - q.float()).abs().max()) for p, q in zip(a, b, strict=True))
    e, cm = statistics.median(e_ts), statistics.median(c_ts)
    return {
        "first_call_seconds (compile + run)": t_compile,
        "eager_median_s": e,
        "compiled_median_s": cm,
        "speedup": e / cm,
        "max_abs_diff": diff,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cpu or auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,8,16,32", help="batch sizes, comma-separated")
    ap.add_argument("--quick", action="store_true", help="1024×768 phantom, 1 repeat, B in 1, 2")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--only-compile", action="store_true", help="time torch.compile only")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--model", default=None, help="model file (default: default_mc)")
    ap.add_argument("--out", default=None, help="also write the JSON into this folder")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_detect: CUDA requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    shape = (1024, 768) if args.quick else (3328, 2560)
    repeats = 1 if args.quick else args.repeats
    sizes = [1, 2] if args.quick else [int(v) for v in args.batches.split(",") if v.strip()]
    path = args.model or str(default_model_path("mc"))
    t0 = time.perf_counter()
    img, mask, _ = cc_phantom(shape)
    t_phantom = time.perf_counter() - t0
    pred = Predictor.from_file(path, device=device)
    host = Predictor.from_file(path, device=device, postprocess="host")
    name = device_name(device)
    print(f"gpu_detect: {name}, torch {torch.__version__}, phantom {shape} ({t_phantom:.1f} s)")
    single, rows, comp = None, None, None
    if not args.only_compile:
        single = single_image(pred, host, img, mask, repeats)
        print(f"\n{shape[0]}×{shape[1]}, breast {single['breast_fraction']:.0%}, crop "
              f"{single['crop_fraction']:.0%}, {single['n_gravity_points']} gravity points; "
              f"median of {repeats} (ratio to the forward pass)")  # fmt: skip
        for k, v in single["seconds_median"].items():
            print(f"  {k:46s} {v * 1e3:9.1f} ms  {single['ratio_to_forward'][k]:6.2f}")
        d = single["detections"]
        print(f"  detections: lean {d['lean']}, host {d['host']}, equal: {d['agree']}")
        print("\nbatched detect_batch (distinct images):")
        rows = batched(pred, img, mask, sizes, repeats)
    if args.compile or args.only_compile:
        print("\ntorch.compile of the forward (first call includes compiling):", flush=True)
        try:
            comp = compiled_forward(pred, img, mask, repeats)
        except Exception as exc:  # no Triton / C++ compiler: record why, keep the rest
            comp = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        for k, v in comp.items():
            print(f"  {k:40s} {v if isinstance(v, str) else f'{v:.4g}'}")
    out = {
        "benchmark": "gpu_detect",
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "autocast": str(getattr(pred._autocast(), "fast_dtype", None)),
        "model": Path(path).name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "repeats": repeats,
        "phantom_seconds": t_phantom,
        "image": single,
        "batches": rows,
        "compile": comp,
    }
    suffix = "_compile" if args.only_compile else ""
    fname = f"gpu_detect{suffix}_{device.type}.json"
    targets = [] if args.quick else [RESULTS / fname]
    if args.out:
        targets.append(Path(args.out) / fname)
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
