"""Benchmark of ``gravity predict`` as a pipeline (issue 10): reader workers and batches.

Writes N synthetic CC-like mammograms (a breast over about half of the image, air elsewhere) as
DICOM files (JPEG 2000 lossless by default, as many archives store them; ``--compress none`` for
uncompressed, ``rle``) and times ``gravity predict`` over the folder, in this process, with
``--workers 0`` (read in the main process) vs ``--workers 2`` and ``--batch-size 1`` vs ``4``,
all with the breast mask (computed by the readers). In the same run it times the stages of one
image on their own (DICOM decode, breast mask), so the table shows how much of the work the
readers can take off the main process.

The model is a small, randomly initialised GravityNet (ResNet-18 cut at layer2, 32-channel
heads): weights do not change the cost; the lead's benchmark (``benchmarks/inference.py``) owns
the model-speed figures. CUDA is timed only when ``--device cuda`` is given on a machine with a
GPU; otherwise the CUDA figures are "not yet measured".

``outside_network_s`` = wall time - N x the mean seconds of the network + post-processing
call per image: the reading, masking and writing that the main process did not hide.

Usage: ``python benchmarks/predict_pipeline.py [--quick] [--n 8] [--repeats R]
[--compress j2k|rle|none] [--device cpu|cuda]``. Prints a table and writes ``benchmarks/results/predict_pipeline_<device>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FULL = (3328, 2560)
QUICK = (1664, 1280)


def cc_like(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A CC-like 14-bit mammogram: a half-ellipse breast on the left edge (~47 % of the image)
    with smooth tissue texture and noise, dark air elsewhere; distinct per seed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((yy - h / 2) / (0.47 * h)) ** 2 + (xx / (0.63 * w)) ** 2 <= 1.0
    coarse = rng.standard_normal((h // 64 + 2, w // 64 + 2)).astype(np.float32)
    tex = np.kron(coarse, np.ones((64, 64), np.float32))[:h, :w]
    img = np.where(inside, 1800 + 250 * tex + 40 * rng.standard_normal(shape), 80.0)
    img += 8 * rng.standard_normal(shape)
    return np.clip(img, 0, 16383).astype(np.float32)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_stages(paths: list[Path]) -> dict[str, float]:
    """Mean seconds per image of each stage the readers run, on the same files."""
    from napari_gravity.data.masks import tissue_mask
    from napari_gravity.data.readers import read_image

    read, mask = [], []
    for p in paths:
        t0 = time.perf_counter()
        img = read_image(p).image
        t1 = time.perf_counter()
        tissue_mask(img, "mc")
        t2 = time.perf_counter()
        read.append(t1 - t0)
        mask.append(t2 - t1)
    return {"read_s": float(np.mean(read)), "mask_s": float(np.mean(mask))}


def predict(model: Path, folder: Path, out: Path, workers: int, batch: int, device: str) -> dict:
    from training.cli import main

    args = ["predict", str(model), str(folder), "--out", str(out), "--device", device]
    args += ["--no-progress", "--mask", "breast", "--workers", str(workers)]
    args += ["--batch-size", str(batch)]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"gravity predict failed (rc {rc}): {buf.getvalue()[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    return {
        "workers": workers,
        "batch_size": batch,
        "wall_s": wall,
        "images_per_s": s["n_images"] / wall,
        "network_and_post_s_per_image": s["seconds_per_image_mean"],
        "n_images": s["n_images"],
        "n_detections": s["n_detections"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK[0]}x{QUICK[1]} images")
    ap.add_argument("--n", type=int, default=8, help="images (default 8)")
    ap.add_argument("--compress", default="j2k", choices=("j2k", "rle", "none"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median)")
    ap.add_argument("--out", help="results JSON (default benchmarks/results/...)")
    a = ap.parse_args(argv)

    import torch

    from napari_gravity.core import GravityConfig, GravityNet, save_model
    from napari_gravity.data.synthetic.writers import write_dicom

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: the CUDA figures stay 'not yet measured'")
    shape = QUICK if a.quick else FULL
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="predict_bench_") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        t0 = time.perf_counter()
        paths = []
        for k in range(a.n):
            p = folder / f"cc{k:02d}.dcm"
            compress = None if a.compress == "none" else a.compress
            write_dicom(p, cc_like(shape, k), compress=compress, laterality="L")
            paths.append(p)
        print(
            f"wrote {a.n} {shape[0]}x{shape[1]} DICOM ({a.compress}) in {time.perf_counter() - t0:.1f} s"
        )
        cfg = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)
        torch.manual_seed(0)
        model = tmp / "small.safetensors"
        save_model(model, GravityNet(cfg).eval(), cfg, {"threshold": 0.5, "task": "mc"})
        # warm-up: imports, first allocation, one-time initialisations
        warm = tmp / "warm"
        warm.mkdir()
        write_dicom(warm / "w.dcm", cc_like((256, 256), 99))
        predict(model, warm, tmp / "warm_out", 0, 1, a.device)
        stages = time_stages(paths)
        print(
            f"stages per image: read {stages['read_s']:.3f} s, breast mask {stages['mask_s']:.3f} s"
        )
        configs = [(w, b) for w in a.workers for b in a.batch]
        trials: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
        for rep in range(a.repeats):  # interleaved rounds, the order rotated each round
            for w, b in configs[rep % len(configs) :] + configs[: rep % len(configs)]:
                print(f"... round {rep + 1}: --workers {w} --batch-size {b}", flush=True)
                r = predict(model, folder, tmp / f"out_w{w}_b{b}", w, b, a.device)
                r["load_average_1min"] = round(os.getloadavg()[0], 2)
                trials[(w, b)].append(r)
                print(f"    {r['wall_s']:.1f} s, {r['images_per_s']:.3f} images/s", flush=True)
    runs = []
    for (w, b), rs in trials.items():
        walls = [r["wall_s"] for r in rs]
        net = float(np.median([r["network_and_post_s_per_image"] for r in rs]))
        wall = float(np.median(walls))
        runs.append(
            {
                "workers": w,
                "batch_size": b,
                "wall_s": wall,
                "wall_s_each": walls,
                "images_per_s": a.n / wall,
                "network_and_post_s_per_image": net,
                # what the pipeline targets: time outside the network + post-processing calls
                "outside_network_s": wall - a.n * net,
                "n_detections": rs[0]["n_detections"],
            }
        )
    base = next(r for r in runs if r["workers"] == 0 and r["batch_size"] == 1)
    base_walls = trials[(base["workers"], base["batch_size"])]
    for r, rs in zip(runs, trials.values(), strict=True):
        r["speedup_vs_workers0_batch1"] = base["wall_s"] / r["wall_s"]
        # the same ratio within each round (configurations of a round run back to back, so a
        # load change on a shared machine between rounds cancels), then the median
        per_round = [b0["wall_s"] / x["wall_s"] for b0, x in zip(base_walls, rs, strict=True)]
        r["speedup_per_round"] = per_round
        r["speedup_median_of_rounds"] = float(np.median(per_round))
        r["load_average_1min_each"] = [x["load_average_1min"] for x in rs]
    dev = torch.device(a.device)
    env = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    result = {
        "environment": env,
        "setup": {
            "n_images": a.n,
            "shape": list(shape),
            "format": f"DICOM MG, {a.compress}",
            "mask": "breast (computed by the readers)",
            "model": "GravityNet resnet18 stride 8 step 4, 32-channel heads, random weights",
            "threshold": 0.5,
            "repeats": a.repeats,
            "stat": "median over the interleaved rounds",
        },
        "stages_s_per_image": stages,
        "runs": runs,
        "cuda": "not yet measured" if dev.type != "cuda" else "measured above",
    }
    print(
        f"\n{env['device']} ({env['device_name']}, {env['cpu_count']} CPUs, load {env['load_average_start']})"
    )
    print(
        f"{'workers':>7} {'batch':>5} {'wall s':>8} {'img/s':>7} {'net+post s/img':>15} "
        f"{'outside s':>9} {'speed-up':>8} {'per round':>9}"
    )
    for r in runs:
        print(
            f"{r['workers']:>7} {r['batch_size']:>5} {r['wall_s']:>8.1f} {r['images_per_s']:>7.3f} "
            f"{r['network_and_post_s_per_image']:>15.2f} {r['outside_network_s']:>9.2f} "
            f"{r['speedup_vs_workers0_batch1']:>8.2f} {r['speedup_median_of_rounds']:>9.2f}"
        )
    out = Path(a.out or Path(__file__).parent / "results" / f"predict_pipeline_{dev.type}.json")
    from napari_gravity.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
