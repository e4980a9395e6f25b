"""Inference benchmark for the GravityNet core.

Times, separately, the backbone, the two subnets (heads) and the post-processing
(decode + NMS + threshold), the threshold change from cached outputs and peak memory, for

- a 1216×1408 fundus image   (ResNet-50, step 6:  60,192 gravity points, L = 3)
- a 3328×2560 mammogram      (ResNet-34, step 10: 133,120 gravity points, L = 7)
- the same mammogram          (ResNet-34, step 6:  299,520 gravity points, L = 7)

on the CPU, and on CUDA when present (bf16/fp16 autocast + channels_last; NMS on the GPU with the
same grid algorithm). Models are randomly initialised (weights do not change the cost of the
network). Post-processing is timed on two workloads, both with every candidate above the NMS
floor (the worst case: a trained model leaves far fewer): the model's own untrained outputs
(offsets 0, scores ≈ 0.01) and "converged" outputs (points jittered towards random centres,
uniform random scores), and compared with torchvision.ops.nms.

Usage: ``python benchmarks/inference.py [--device cpu|cuda|auto] [--repeats N] [--quick]``.
Prints a table and writes ``benchmarks/results/inference_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_gravity.core import GravityConfig, GravityNet
from napari_gravity.core.postprocess import (
    inside_image,
    nms_keep,
    nms_keep_torch,
    nms_points_torchvision,
)
from napari_gravity.core.predictor import RawOutput, resolve_device

CASES = [
    ("fundus 1216x1408 R50 step6", (1216, 1408), "resnet50", 6, 3.0),
    ("mammo 3328x2560 R34 step10", (3328, 2560), "resnet34", 10, 7.0),
    ("mammo 3328x2560 R34 step6", (3328, 2560), "resnet34", 6, 7.0),
]
FLOOR = 1e-3
THRESHOLD = 0.5


class RSSPeak:
    """Peak resident memory above the starting level, sampled every 2 ms (CPU runs)."""

    def __init__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        def run():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(0.002)

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


LAST_CPU = {"s": 0.0}  # process CPU time (median) of the last timeit call


def timeit(fn, repeats: int, sync) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (and LAST_CPU: median process CPU time, which
    is less sensitive to other work on a shared machine)."""
    times, cpu = [], []
    out = None
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    LAST_CPU["s"] = statistics.median(cpu)
    return statistics.median(times), out


def gpu_post(pts, scores, shape, box, iou):
    """decode output -> candidates (>= floor, inside the image) -> grid NMS -> threshold,
    all on the GPU; returns (points, scores) best first, the kept mask and the candidate mask."""
    h, w = shape
    valid = (scores >= FLOOR) & (pts[:, 0] >= -0.5) & (pts[:, 0] < h - 0.5)
    valid &= (pts[:, 1] >= -0.5) & (pts[:, 1] < w - 0.5)
    keep = nms_keep_torch(pts, scores, box, iou, valid=valid, extent=shape)
    sel = torch.nonzero(keep & (scores >= THRESHOLD)).flatten()
    sel = sel[torch.argsort(scores[sel], descending=True)]
    return (pts[sel], scores[sel]), None, keep, valid


def converged_outputs(gp: np.ndarray, step: int, rng: np.random.Generator):
    """Synthetic 'trained' outputs: every point pulled most of the way to a random lesion
    centre near it (clusters of collapsed points), plus uniform random scores."""
    centres = gp + rng.uniform(-step, step, gp.shape)
    pulled = gp + 0.8 * (np.round(centres / (2 * step)) * (2 * step) - gp)
    pts = pulled + rng.normal(0, 1.0, gp.shape)
    return pts.astype(np.float32), rng.random(len(gp)).astype(np.float32)


def time_threshold_changes(raw: RawOutput, box: float) -> dict[str, float]:
    """Median and max time of six γ changes re-applied to a cached raw output."""
    times = []
    for thr in (0.3, 0.5, 0.7, 0.9, 0.1, 0.6):
        t0 = time.perf_counter()
        raw.select(thr, box, 0.5)
        times.append(time.perf_counter() - t0)
    return {"threshold_change_s": statistics.median(times), "threshold_change_max_s": max(times)}


def bench_case(name, shape, backbone, step, box, device, repeats, rng, tv_limit):
    cfg = GravityConfig(backbone=backbone, step=step, nms_box=box)
    model = GravityNet(cfg).eval().to(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.rand(1, 1, *shape, device=device)
    res = {"case": name, "shape": list(shape), "backbone": backbone, "step": step, "nms_box": box}
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        res["autocast"] = str(dt).replace("torch.", "")
        res["channels_last"] = True
        ac = lambda: torch.autocast("cuda", dtype=dt)  # noqa: E731
    else:
        import contextlib

        ac = contextlib.nullcontext
    gp = model.points_for(shape, device)
    res["n_points"] = int(gp.shape[0])

    with torch.inference_mode():
        xp = model.pad(x)
        if cuda:
            xp = xp.contiguous(memory_format=torch.channels_last)

        def backbone_fn():
            with ac():
                return model.backbone(xp)

        def heads_fn():
            with ac():
                return model.heads(feat)

        # warm-up (cuDNN autotune, allocator)
        warm = 2 if cuda else 1
        for _ in range(warm):
            feat = backbone_fn()
            heads_fn()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with RSSPeak() as mem:
            res["backbone_s"], feat = timeit(backbone_fn, repeats, sync)
            res["heads_s"], (logits, offsets) = timeit(heads_fn, repeats, sync)
        if cuda:
            res["peak_mem_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            res["peak_mem_kind"] = "CUDA allocated above the model"
        else:
            res["peak_mem_mib"] = mem.mib
            res["peak_mem_kind"] = "CPU RSS above the start (sampled)"
        res["network_s"] = res["backbone_s"] + res["heads_s"]

        # --- post-processing of the network's own outputs: decode + NMS(floor) + threshold
        def post_fn():
            scores = torch.sigmoid(logits[0].float())
            pts = gp + offsets[0].float() * cfg.d_h
            if cuda:
                return gpu_post(pts, scores, shape, box, cfg.nms_iou)
            raw = RawOutput(pts.numpy(), scores.numpy(), gp.numpy(), shape, cfg.d_h, FLOOR)
            det = raw.select(THRESHOLD, box, cfg.nms_iou)
            return det, raw, raw

        post_reps = max(repeats, 5)
        res["post_model_s"], out = timeit(post_fn, post_reps, sync)
        res["post_model_cpu_s"] = LAST_CPU["s"]
        if cuda:
            res["post_model_candidates"] = int(out[3].sum())
            res["post_model_kept"] = int(out[2].sum())
        else:
            res["post_model_candidates"] = int((out[1].scores >= FLOOR).sum())
            res["post_model_kept"] = len(out[1].kept(box, cfg.nms_iou)[0])

    # --- post-processing worst case: converged-like outputs, all above the floor
    gpn = gp.float().cpu().numpy()
    pts_c, sc_c = converged_outputs(gpn, step, rng)
    if cuda:
        tp, ts = torch.from_numpy(pts_c).to(device), torch.from_numpy(sc_c).to(device)

        def post_c():
            return gpu_post(tp, ts, shape, box, 0.5)

        res["post_converged_s"], _ = timeit(post_c, 10, sync)
        from torchvision.ops import nms

        h2 = box / 2
        boxes = torch.stack([tp[:, 1] - h2, tp[:, 0] - h2, tp[:, 1] + h2, tp[:, 0] + h2], 1)
        try:
            res["torchvision_nms_s"], _ = timeit(lambda: nms(boxes, ts, 0.5), 3, sync)
            res["torchvision_nms_n"] = len(ts)
        except torch.cuda.OutOfMemoryError:
            res["torchvision_nms_s"] = None
        torch.cuda.empty_cache()
    else:

        def post_c():
            raw = RawOutput(pts_c, sc_c, gpn, shape, cfg.d_h, FLOOR)
            return raw.select(THRESHOLD, box, 0.5), raw

        res["post_converged_s"], (_det, raw_c) = timeit(post_c, 5, sync)
        res["post_converged_cpu_s"] = LAST_CPU["s"]
        # torchvision on CPU is O(N^2) for dense sets: time it on a subset and say so
        n_tv = min(len(sc_c), tv_limit)
        sub = np.argsort(-sc_c)[:n_tv]
        ok = inside_image(pts_c[sub], shape)
        res["torchvision_nms_s"], _ = timeit(
            lambda: nms_points_torchvision(pts_c[sub][ok], sc_c[sub][ok], box, 0.5), 1, sync
        )
        res["torchvision_nms_n"] = int(ok.sum())
        t0 = time.perf_counter()
        nms_keep(pts_c[sub][ok], sc_c[sub][ok], box, 0.5)
        res["grid_nms_same_subset_s"] = time.perf_counter() - t0
        # threshold change from the cache (kept set computed once above)
        res.update(time_threshold_changes(raw_c, box))
    if cuda:
        # the GUI path: cached CPU outputs, threshold change
        raw_c = RawOutput(pts_c, sc_c, gpn, shape, cfg.d_h, FLOOR)
        raw_c.select(0.5, box, 0.5)
        res.update(time_threshold_changes(raw_c, box))
    if cuda:
        torch.cuda.empty_cache()
    return res


def fmt_ms(v):
    return "-" if v is None else f"{v * 1e3:9.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of the network")
    ap.add_argument("--quick", action="store_true", help="fundus case only")
    ap.add_argument("--tv-limit", type=int, default=20000, help="CPU torchvision subset size")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    repeats = a.repeats or (10 if device.type == "cuda" else 1)
    rng = np.random.default_rng(0)
    cases = CASES[:1] if a.quick else CASES
    results = []
    for c in cases:
        print(f"... {c[0]} on {device}", flush=True)
        results.append(bench_case(*c, device, repeats, rng, a.tv_limit))
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "repeats": repeats,
        "floor": FLOOR,
        "threshold": THRESHOLD,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    hdr = (
        f"{'case':28s} {'N_GP':>8s} {'backbone':>9s} {'heads':>9s} {'post':>9s} "
        f"{'post*':>9s} {'tv-nms':>9s} {'thr-chg':>9s} {'peakMiB':>8s}"
    )
    print(
        f"\n{env['device']} ({env['device_name']}), times in ms (median), post* = converged worst case"
    )
    print(hdr)
    for r in results:
        print(
            f"{r['case']:28s} {r['n_points']:8d} {fmt_ms(r['backbone_s'])} {fmt_ms(r['heads_s'])} "
            f"{fmt_ms(r['post_model_s'])} {fmt_ms(r['post_converged_s'])} "
            f"{fmt_ms(r.get('torchvision_nms_s'))} {fmt_ms(r['threshold_change_s'])} "
            f"{r['peak_mem_mib']:8.0f}"
        )
    out = a.out or str(Path(__file__).parent / "results" / f"inference_{device.type}.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump({"environment": env, "results": results}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
