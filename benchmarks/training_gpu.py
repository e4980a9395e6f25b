"""Train the default model (and the RetinaNet comparator) on one GPU within a fixed budget.

What it does, in order (each step's wall time goes into the summary JSON):

1. writes the mc-bench synthetic + semi-real benchmark (train/val only: the test split is
   generated and evaluated on the CPU machine, which holds the real backgrounds of the test
   patient) with ``make_benchmark`` in a process pool;
2. runs ``gravity train synth_mc_gpu`` (GravityNet) and, concurrently on the same GPU,
   ``gravity train synth_mc_retinanet_gpu`` (RetinaNet), both with the same time budget, as
   subprocesses; a hard deadline sends SIGTERM (clean stop: checkpoint + best model exported);
3. times, alone on the GPU, GravityNet training throughput (tiles/s) and inference on a
   full-size 3328x2560 mammogram (a mosaic of benchmark images) with the trained model;
4. packs the runs into ``OUT/*.tar.gz`` (split in 15 MiB parts when larger).

Usage (on the GPU machine, repo root):
``python benchmarks/training_gpu.py --out $OUT [--budget 360] [--quick]``
``--quick`` is the end-to-end rehearsal on a CPU: mc-tiny data, tiny budget, CPU device.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_data(bench_root: Path, quick: bool, workers: int) -> dict:
    from napari_gravity.data.synthetic import make_benchmark

    recipe = "mc-tiny" if quick else "mc-bench"
    root = bench_root / recipe
    if (root / "recipe.json").is_file():
        return json.loads((root / "recipe.json").read_text())
    counts = {"train": 12, "val": 4, "test": 0} if quick else {"train": 200, "val": 50, "test": 0}
    return make_benchmark(
        root, recipe, format="folder", workers=workers, overwrite=True, counts=counts
    )


def launch(
    config: str,
    run_dir: Path,
    bench_root: Path,
    synth: str,
    device: str,
    budget: float,
    extra: list[str],
    log_path: Path,
):
    cmd = [
        sys.executable,
        "-m",
        "training",
        "train",
        config,
        "--out",
        str(run_dir),
        "--device",
        device,
        "--no-progress",
        "--set",
        f"data.cache_dir={bench_root}",
        "--set",
        f"data.synthetic={synth}",
        "--set",
        f"train.time_budget_s={budget}",
        *extra,
    ]
    log("launch: " + " ".join(cmd))
    fh = open(log_path, "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env), fh


def time_training(model_cfg: dict, device: str, seconds: float, batch: int, tile: int) -> dict:
    """Training steps/s on random tiles with the real loss (alone on the device)."""
    import torch

    from napari_gravity.core.config import GravityConfig
    from napari_gravity.core.loss import GravityLoss
    from napari_gravity.core.model import GravityNet

    dev = torch.device(device)
    cfg = GravityConfig.from_dict(model_cfg)
    model = GravityNet(cfg).to(dev)
    cl = dev.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = GravityLoss(cfg.d_h)
    x = torch.rand(batch, 1, tile, tile, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    targets = [(torch.rand(5, 2, generator=gen) * tile).to(dev) for _ in range(batch)]
    gp = model.points_for((tile, tile), dev)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step():
        with amp:
            lg, off = model(x)
        out = loss_fn(lg, off, gp, targets)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "steps": n,
        "seconds": dt,
        "batch": batch,
        "tile": tile,
        "tiles_per_s": n * batch / dt,
        "megapixels_per_s": n * batch * tile * tile / dt / 1e6,
        "amp": "bf16" if dev.type == "cuda" else None,
    }


def time_inference(model_path: Path, bench: Path, device: str, repeats: int) -> dict:
    """Seconds per full-size (3328x2560) mammogram with the Predictor: network + post-processing."""
    import numpy as np
    import torch

    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.datasets import open_dataset

    refs = open_dataset(bench / "val") + open_dataset(bench / "train")
    tiles = [r.load().image for r in refs[:40]]
    th, tw = tiles[0].shape
    H, W = 3328, 2560
    mosaic = np.zeros((-(-H // th) * th, -(-W // tw) * tw), np.float32)
    k = 0
    for y in range(0, mosaic.shape[0], th):
        for x in range(0, mosaic.shape[1], tw):
            mosaic[y : y + th, x : x + tw] = tiles[k % len(tiles)]
            k += 1
    img = mosaic[:H, :W].copy()
    pred = Predictor.from_file(model_path, device=device)
    out = {"image_shape": [H, W], "device": device}
    times, times_net = [], []
    for i in range(repeats + 1):
        pred.clear_cache()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        raw = pred.raw(img + i)  # a new image each time (no cache hit)
        t1 = time.perf_counter()
        det = pred.from_raw(raw)
        t2 = time.perf_counter()
        if i:
            times.append(t2 - t0)
            times_net.append(t1 - t0)
        out["detections_at_model_threshold"] = len(det)
        out["gravity_points"] = len(raw.scores)
    out["seconds_per_image"] = float(np.median(times))
    out["seconds_network_and_decode"] = float(np.median(times_net))
    out["seconds_all"] = times
    return out


def pack(run_dir: Path, out: Path, name: str, part_mb: int = 15) -> list[str]:
    keep = [
        "model.safetensors",
        "events.jsonl",
        "metrics.csv",
        "config.yaml",
        "froc_best.json",
        "froc_best.png",
        "train.log",
    ]
    tar_path = out / f"{name}.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for k in keep:
            p = run_dir / k
            if p.is_file():
                tf.add(p, arcname=f"{name}/{k}")
    size = tar_path.stat().st_size
    if size <= part_mb * 2**20:
        return [tar_path.name]
    parts = []
    data = tar_path.read_bytes()
    tar_path.unlink()
    step = part_mb * 2**20
    for i in range(0, len(data), step):
        p = out / f"{name}.tar.gz.part{i // step}"
        p.write_bytes(data[i : i + step])
        parts.append(p.name)
    return parts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=360.0, help="training loop seconds per model")
    ap.add_argument(
        "--deadline", type=float, default=480.0, help="hard stop (SIGTERM) after launch, s"
    )
    ap.add_argument(
        "--total", type=float, default=540.0, help="whole-script budget, s (clamps the rest)"
    )
    ap.add_argument("--work", default="/tmp/gravity_work")
    ap.add_argument("--quick", action="store_true", help="CPU rehearsal with mc-tiny")
    ap.add_argument("--no-retinanet", action="store_true")
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    summary: dict = {"argv": sys.argv, "quick": args.quick}
    import torch

    device = "cpu" if args.quick else "cuda"
    summary["torch"] = torch.__version__
    summary["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    log(f"torch {torch.__version__} device {summary['cuda']}")

    t0 = time.time()
    info = make_data(work / "bench", args.quick, args.workers)
    summary["data_seconds"] = time.time() - t0
    summary["data_counts"] = info.get("counts")
    summary["data_lesions"] = info.get("lesions")
    log(f"benchmark ready in {summary['data_seconds']:.0f} s: {info.get('counts')}")
    # clamp the budgets so that timing + packing still fit in --total
    remaining = args.total - (time.time() - t_all) - 75.0
    args.deadline = max(60.0, min(args.deadline, remaining))
    args.budget = max(30.0, min(args.budget, args.deadline - 45.0))
    summary["budget_s"], summary["deadline_s"] = args.budget, args.deadline
    log(f"training budget {args.budget:.0f} s, hard deadline {args.deadline:.0f} s")
    recipe = "mc-tiny" if args.quick else "mc-bench"
    n_tr, n_va = (12, 4) if args.quick else (200, 50)
    synth = f"{{recipe: {recipe}, counts: {{train: {n_tr}, val: {n_va}, test: 0}}}}"

    quick_extra = (
        [
            "--set",
            "train.batch_size=4",
            "--set",
            "data.tile_size=64",
            "--set",
            "train.num_workers=0",
            "--set",
            "data.tiles_per_image=2",
            "--set",
            "net.head_channels=32",
            "--set",
            "train.max_steps_per_epoch=3",
        ]
        if args.quick
        else []
    )
    procs = {}
    runs = {"gravitynet": ("synth_mc_gpu", work / "run_gravity")}
    if not args.no_retinanet:
        runs["retinanet"] = ("synth_mc_retinanet_gpu", work / "run_retina")
    for name, (cfg, rd) in runs.items():
        extra = list(quick_extra)
        if name == "retinanet" and args.quick:
            extra = extra[:-4] + extra[-2:]  # no net.head_channels for RetinaNet
        procs[name] = launch(
            cfg, rd, work / "bench", synth, device, args.budget, extra, work / f"{name}.log"
        )
    t_launch = time.time()
    while any(p.poll() is None for p, _ in procs.values()):
        if time.time() - t_launch > args.deadline:
            for name, (p, _) in procs.items():
                if p.poll() is None:
                    log(f"deadline: SIGTERM {name}")
                    p.send_signal(signal.SIGTERM)
            t_kill = time.time()
            while any(p.poll() is None for p, _ in procs.values()) and time.time() - t_kill < 45:
                time.sleep(1)
            for p, _ in procs.values():
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(2)
    for name, (p, fh) in procs.items():
        fh.close()
        rd = runs[name][1]
        rd.mkdir(parents=True, exist_ok=True)
        (rd / "train.log").write_text((work / f"{name}.log").read_text()[-200_000:])
        summary[f"{name}_returncode"] = p.returncode
        summary[f"{name}_wall_s"] = time.time() - t_launch
        log(f"{name} exited {p.returncode}")
        print((work / f"{name}.log").read_text()[-1500:], flush=True)
    model = runs["gravitynet"][1] / "model.safetensors"
    if model.is_file():
        try:
            net = json.loads(
                __import__("safetensors").safe_open(str(model), "np").metadata()["napari_gravity"]
            )["config"]
            summary["train_throughput"] = time_training(
                net,
                device,
                5.0 if args.quick else 20.0,
                4 if args.quick else 32,
                64 if args.quick else 256,
            )
            log(f"throughput {summary['train_throughput']}")
            summary["inference_full_mammogram"] = time_inference(
                model, work / "bench" / recipe, device, 1 if args.quick else 5
            )
            log(
                f"inference {summary['inference_full_mammogram']['seconds_per_image']:.3f} s per 3328x2560"
            )
        except Exception as exc:  # timing must not lose the trained model
            summary["timing_error"] = repr(exc)
            log(f"timing failed: {exc!r}")
    files = []
    for name, (_, rd) in runs.items():
        files += pack(rd, out, name)
    summary["files"] = files
    summary["total_seconds"] = time.time() - t_all
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"done in {summary['total_seconds']:.0f} s: {files}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
