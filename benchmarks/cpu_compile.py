"""Does ``torch.compile`` pay on the CPU? (issue 10: "measure before choosing").

Times, in one run on the same input, the shipped ``default_mc`` network's forward pass (features +
head maps, channels-last fp32, as ``Predictor`` runs it) eager and compiled with inductor
(default mode, static shape), plus the one-off compile time and the largest output difference. The input is the breast box of the
CC-like phantom of ``cpu_detect.py`` (``--size`` sets the phantom; ``--quick`` a 1024×768 one).

Usage: ``python benchmarks/cpu_compile.py [--quick] [--threads 2] [--repeats 3]``. Prints a
table and writes ``benchmarks/results/cpu_compile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", default="3328x2560")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_compile.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from cpu_detect import cc_phantom

    from napari_gravity.core.normalize import normalize_image
    from napari_gravity.core.predictor import Predictor, crop_box
    from napari_gravity.core.registry import default_model_path

    h, w = (1024, 768) if args.quick else tuple(int(v) for v in args.size.split("x"))
    img, mask, _ = cc_phantom((h, w))
    pred = Predictor.from_file(str(default_model_path("mc")), device="cpu")
    model = pred.model
    box = crop_box(mask, img.shape, pred.config.stride, pred.crop_margin)
    y0, y1, x0, x1 = box or (0, h, 0, w)
    norm = normalize_image(img, pred.config.normalization)[y0:y1, x0:x1].copy()
    x = torch.from_numpy(norm)[None, None].contiguous(memory_format=torch.channels_last)

    def eager():
        return model.head_maps(model.features(x))

    compiled_fn = torch.compile(lambda t: model.head_maps(model.features(t)), dynamic=False)

    with torch.inference_mode():
        t0 = time.perf_counter()
        ref = eager()
        eager_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = compiled_fn(x)
        compile_s = time.perf_counter() - t0
        diff = max(float((a - b).abs().max()) for a, b in zip(ref, got, strict=True))
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):  # interleaved
            for name, fn in (("eager", eager), ("compiled", lambda: compiled_fn(x))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"input {tuple(x.shape)} (breast box of a {h}×{w} phantom), {args.threads} threads")
    print(f"{'variant':<12} {'median s':>9} {'ratio':>7}")
    for k in ("eager", "compiled"):
        print(f"{k:<12} {med[k]:>9.3f} {med[k] / med['eager']:>7.2f}")
    print(f"compile (first call) {compile_s:.1f} s; eager first call {eager_first:.2f} s")
    print(f"largest output difference {diff:.2e}")
    res = {
        "benchmark": "cpu_compile",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_avg_1min": round(os.getloadavg()[0], 2),
        },
        "input_shape": list(x.shape),
        "phantom": [h, w],
        "seconds": times,
        "median_s": med,
        "compiled_over_eager": med["compiled"] / med["eager"],
        "compile_s": compile_s,
        "max_abs_diff": diff,
    }
    out = Path(args.out)
    if args.quick:
        out = out.with_name(out.stem + "_quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
