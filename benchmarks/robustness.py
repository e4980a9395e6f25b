"""Cross-family robustness protocol: leave-one-family-out training and held-out tests.

For a domain-randomised benchmark (``mc-diverse`` or ``ma-diverse``, one lesion family per
image, see ``ROOT/families.csv``):

1. for every held-out family F: train a model on the train / val images of the OTHER families
   (same recipe, same budget) and test it on the test images of F only;
2. test the model trained on all families (``--model``, e.g. the shipped default) on the mixed
   test split, on its real-background images (a patient / retina region never trained on) and
   on each family;
3. on the same images, run the classical candidates (top-hat, Hessian-DoG) and report
   AUFROC_10 with 1,000-resample case-bootstrap CIs, the paired Δ against the best classical
   method, and — for the learned models — FPpI and sensitivity AT THE STORED operating
   threshold (calibration), not only the area.

Usage (CPU, two trainings at a time on one thread each)::

    python benchmarks/robustness.py --task mc --data /work/data/mc-diverse \
        --runs runs/lofo-mc --budget 600 --parallel 2 \
        --model default_mc=napari_gravity/models/default_mc.safetensors \
        --out benchmarks/results/robustness_mc.json

``--train-only`` / ``--eval-only`` split the two phases; a finished run is never retrained.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {"mc": "training/configs/robust_mc_cpu.yaml", "ma": "training/configs/robust_ma_cpu.yaml"}


def read_families(data: Path) -> list[dict]:
    with open(data / "families.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def make_lofo_folder(data: Path, dest: Path, holdout: str, rows: list[dict]) -> Path:
    """``dest/{train,val}`` with links to the images (and CSVs) of every family but ``holdout``."""
    if (dest / "recipe.json").is_file():
        return dest
    keep = {(r["split"], r["image"]) for r in rows if r["family"] != holdout}
    for split in ("train", "val"):
        out = dest / split
        out.mkdir(parents=True, exist_ok=True)
        src = data / split
        ids = set()
        for f in sorted(src.iterdir()):
            stem = f.name.split(".")[0]
            if (split, stem) in keep and f.name != "patients.csv":
                target = out / f.name
                if not target.exists():
                    os.symlink(f.resolve(), target)
                ids.add(stem)
        with open(src / "patients.csv", newline="") as fh, open(out / "patients.csv", "w") as fo:
            rd = csv.reader(fh)
            wr = csv.writer(fo)
            wr.writerow(next(rd))
            for row in rd:
                if row[0] in ids:
                    wr.writerow(row)
    info = json.loads((data / "recipe.json").read_text())
    info["lofo_holdout"] = holdout
    (dest / "recipe.json").write_text(json.dumps(info, indent=1))
    return dest


def train_cmd(task: str, lofo: Path, run: Path, budget: float, extra: list[str]) -> list[str]:
    sets = [
        "data.synthetic=null",
        f"data.root={lofo}",
        f"train.time_budget_s={budget}",
        "data.workers=1",
        *extra,
    ]
    cmd = [sys.executable, "-m", "training", "train", CONFIGS[task], "--out", str(run)]
    cmd += ["--device", "cpu", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train_all(args, rows: list[dict], holdouts: list[str]) -> dict[str, Path]:
    runs = Path(args.runs)
    jobs = []
    models = {}
    for fam in holdouts:
        run = runs / f"no-{fam}"
        models[fam] = run / "model.safetensors"
        if models[fam].is_file():
            continue
        lofo = make_lofo_folder(Path(args.data), runs / "data" / f"no-{fam}", fam, rows)
        jobs.append((fam, train_cmd(args.task, lofo, run, args.budget, args.set), run))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    running: list[tuple[str, subprocess.Popen, float]] = []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            fam, cmd, run = jobs.pop(0)
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "train.log", "w")
            print(f"[train] hold out {fam}: {' '.join(cmd)}", flush=True)
            running.append(
                (fam, subprocess.Popen(cmd, stdout=log, stderr=log, env=env), time.time())
            )
        time.sleep(5)
        for item in list(running):
            fam, proc, t0 = item
            if proc.poll() is not None:
                print(
                    f"[train] hold out {fam}: exit {proc.returncode} after {time.time() - t0:.0f} s",
                    flush=True,
                )
                running.remove(item)
    return models


# --------------------------------------------------------------------------- evaluation
def at_threshold(res, thr: float) -> dict:
    """FPpI and sensitivity at a fixed score threshold (the model's stored one)."""
    th = np.asarray(res.thresholds)
    ok = np.flatnonzero(th >= thr)
    k = int(ok[-1]) if len(ok) else 0
    return {"threshold": float(thr), "fppi": float(res.fppi[k]), "sensitivity": float(res.tpr[k])}


def _paired(cmp) -> dict:
    return {
        "delta": round(float(cmp.observed_delta), 4),
        "delta_ci95": [round(v, 4) for v in cmp.delta_ci],
        "p_value": float(cmp.p_value),
    }


def evaluate(
    subsets: dict[str, list[str]],
    samples: dict,
    methods: dict,
    n_boot: int,
    versus: str | None = None,
) -> dict:
    """``{subset: {method: report}}`` plus paired Δ of each learned model vs best classical
    (and vs the learned model ``versus``, e.g. the previous shipped version)."""
    from napari_gravity.evaluation.bootstrap import bootstrap_froc, compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve

    out = {}
    for sub, ids in subsets.items():
        if not ids:
            continue
        gt = {i: samples[i] for i in ids}
        masks = {i: samples[i].mask for i in ids if samples[i].mask is not None}
        rep, results = {}, {}
        for name, m in methods.items():
            if m.get("only") and sub not in m["only"]:
                continue
            dets = {i: m["dets"][i] for i in ids}
            res = froc_curve(dets, gt, ids, masks=masks or None)
            boot = bootstrap_froc(res, n_boot, seed=0)
            r = {
                "aufroc_10": round(res.aufroc(10.0), 4),
                "aufroc_10_ci95": [round(v, 4) for v in boot.aufroc_ci],
                "tpr_at_fppi": {str(k): round(v, 4) for k, v in res.sensitivity_at().items()},
            }
            if m.get("threshold") is not None:
                r["at_stored_threshold"] = at_threshold(res, m["threshold"])
            rep[name] = r
            results[name] = res
        classical = [n for n in ("top-hat", "Hessian-DoG") if n in rep]
        best = max(classical, key=lambda n: rep[n]["aufroc_10"]) if classical else None
        paired = {}
        for name in rep:
            if name in classical or best is None:
                continue
            cmp = compare_bootstrap(results[name], results[best], n_boot, seed=0)
            paired[name] = {"vs": best, **_paired(cmp)}
        out[sub] = {
            "images": len(ids),
            "lesions": int(sum(len(samples[i].points) for i in ids)),
            "methods": rep,
            "best_classical": best,
            "paired_vs_best_classical": paired,
        }
        if versus in rep:
            out[sub]["paired_vs_" + versus] = {
                name: _paired(compare_bootstrap(results[name], results[versus], n_boot, seed=0))
                for name in rep
                if name not in classical and name != versus
            }
    return out


def detect_all(det, samples: dict, ids: list[str], threshold=None) -> dict:
    out = {}
    for i in ids:
        s = samples[i]
        out[i] = (
            det.detect(s.image, mask=s.mask)
            if threshold is None
            else det.detect(s.image, mask=s.mask, threshold=threshold)
        )
    return out


def run_methods(samples: dict, ids: list[str], polarity: str, model_specs: list[str]) -> dict:
    """Detections of the classical candidates and of each ``NAME=PATH`` model on ``ids``
    (``NAME=PATH,tta=d8``: with that test-time augmentation and its calibrated γ / NMS)."""
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.detectors import HessianDoG, TopHat

    methods: dict[str, dict] = {}
    for name, det in (
        ("top-hat", TopHat(polarity=polarity)),
        ("Hessian-DoG", HessianDoG(polarity=polarity)),
    ):
        methods[name] = {"dets": detect_all(det, samples, ids)}
        print(f"[eval] {name} done", flush=True)
    for spec in model_specs:
        name, _, path = spec.partition("=")
        path, _, tta = path.partition(",tta=")
        pred = Predictor.from_file(path, device="cpu", tta=tta or "off")
        methods[name] = {
            "dets": detect_all(pred, samples, ids, threshold=pred.floor),
            "threshold": float(pred.params_for(tta or "off")["threshold"]),
            "path": path,
            "tta": tta or "off",
        }
        print(f"[eval] {name} done", flush=True)
    return methods


def lofo_run_info(runs: Path, holdouts: list[str]) -> dict:
    """Steps, training wall time and image count of each LOFO run (from its events)."""
    from napari_gravity.events import read_events

    info = {}
    for fam in holdouts:
        path = runs / f"no-{fam}" / "events.jsonl"
        if not path.is_file():
            continue
        ev = read_events(path)
        start = next((e for e in ev if e.get("event") == "start"), {})
        done = next((e for e in ev if e.get("event") == "done"), {})
        epochs = sum(e.get("event") == "epoch" for e in ev)
        info[fam] = {
            "steps": epochs * int(start.get("steps_per_epoch") or 0),
            "wall_s": round(float(done.get("wall_s") or 0.0), 1),
            "n_train_images": start.get("n_train"),
        }
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("mc", "ma"), required=True)
    ap.add_argument("--data", required=True, help="a mc-diverse / ma-diverse benchmark folder")
    ap.add_argument("--runs", required=True, help="folder for the leave-one-family-out runs")
    ap.add_argument("--holdout", default=None, help="comma-separated families (default: all)")
    ap.add_argument("--budget", type=float, default=600, help="training seconds per run")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH[,tta=MODE]",
        help="models trained on all families, tested on every subset",
    )
    ap.add_argument(
        "--extra-test",
        action="append",
        default=[],
        metavar="NAME=BENCHMARK",
        help="another benchmark's test split for the --model models (e.g. mc-bench)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--versus", default=None, help="a --model NAME: paired Δ of the others vs it")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate each LOFO model (NMS, threshold) on its own validation images first",
    )
    ap.add_argument("--limit", type=int, default=None, help="every k-th test image (smoke runs)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    data = Path(args.data)
    rows = read_families(data)
    fams = sorted({r["family"] for r in rows}, key=[r["family"] for r in rows].index)
    holdouts = args.holdout.split(",") if args.holdout else fams
    t0 = time.time()
    models = {} if args.eval_only else train_all(args, rows, holdouts)
    if args.eval_only:
        models = {f: Path(args.runs) / f"no-{f}" / "model.safetensors" for f in holdouts}
    if args.train_only:
        return 0
    t_train = time.time() - t0

    import torch

    torch.set_num_threads(2)
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic import load_benchmark

    test_rows = [r for r in rows if r["split"] == "test"]
    if args.limit:
        test_rows = test_rows[:: max(1, len(test_rows) // args.limit)]
    keep = {r["image"] for r in test_rows}
    refs = [r for r in load_benchmark(data)["test"] if r.image_id in keep]
    samples = {r.image_id: r.load() for r in refs}
    subsets = {
        "mixed": [r["image"] for r in test_rows],
        "real_background": [r["image"] for r in test_rows if r["background"] == "real"],
        **{f"family:{f}": [r["image"] for r in test_rows if r["family"] == f] for f in fams},
    }
    polarity = "dark" if args.task == "ma" else "bright"
    ids_all = subsets["mixed"]
    methods = run_methods(samples, ids_all, polarity, args.model)
    for fam in holdouts:
        if not models[fam].is_file():
            print(f"[eval] no model for hold-out {fam}; skipped", flush=True)
            continue
        path = models[fam]
        if args.calibrate:
            from training.calibrate import calibrate_model

            cal = path.parent / "calibrated.safetensors"
            if not cal.is_file():
                calibrate_model(path, Path(args.runs) / "data" / f"no-{fam}", cal)
            path = cal
        pred = Predictor.from_file(path, device="cpu")
        ids = subsets[f"family:{fam}"]
        methods[f"LOFO (trained without {fam})"] = {
            "dets": detect_all(pred, samples, ids, threshold=pred.floor),
            "threshold": float(pred.config.threshold),
            "only": {f"family:{fam}"},
            "path": str(path),
        }
        print(f"[eval] LOFO {fam} done", flush=True)
    report = evaluate(subsets, samples, methods, args.bootstrap, args.versus)
    # the models trained on all families on other benchmarks' test splits (e.g. mc-bench v1)
    extra = {}
    for spec in args.extra_test:
        name, _, root = spec.partition("=")
        erefs = load_benchmark(Path(root))["test"]
        es = {r.image_id: r.load() for r in erefs}
        eids = list(es)
        em = run_methods(es, eids, polarity, args.model)
        extra[name] = evaluate({name: eids}, es, em, args.bootstrap, args.versus)[name]
        print(f"[eval] extra test {name} done", flush=True)
    lofo = {}
    for fam in holdouts:
        sub = report.get(f"family:{fam}", {})
        key = f"LOFO (trained without {fam})"
        if key in sub.get("methods", {}):
            best = sub["best_classical"]
            lofo[fam] = {
                "aufroc_10": sub["methods"][key]["aufroc_10"],
                "ci95": sub["methods"][key]["aufroc_10_ci95"],
                "best_classical": best,
                "best_classical_aufroc_10": sub["methods"][best]["aufroc_10"],
                "at_stored_threshold": sub["methods"][key]["at_stored_threshold"],
            }
    runs_info = lofo_run_info(Path(args.runs), holdouts)
    summary = {
        "task": args.task,
        "lofo_runs": runs_info,
        "data": str(data),
        "recipe": json.loads((data / "recipe.json").read_text()).get("recipe"),
        "families": fams,
        "holdouts": holdouts,
        "lofo_calibrated": bool(args.calibrate),
        "training": {
            "budget_s_per_run": args.budget,
            "config": CONFIGS[args.task],
            "overrides": args.set,
            "parallel": args.parallel,
            "threads_per_run": args.threads,
            "wall_s": round(t_train, 1),
        },
        "protocol": "lesion-based FROC (TP within the lesion's largest bbox side, duplicates = FP, "
        "tissue masks), AUFROC over FPpI 0-10 / 10, 1,000 case-bootstrap resamples (seed 0); "
        "LOFO model for family F trained on the other families' train/val images only",
        "lofo_summary": lofo,
        "subsets": report,
        "extra_tests": extra,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print_table(summary)
    return 0


def reference_deltas(subset: dict):
    """``(reference, model, paired Δ)`` for each ``paired_vs_<reference>`` entry that
    ``evaluate(..., versus=...)`` wrote into one subset's report."""
    for key, cmps in subset.items():
        if key.startswith("paired_vs_") and key != "paired_vs_best_classical":
            for name, c in cmps.items():
                yield key.removeprefix("paired_vs_"), name, c


def print_subsets(results: dict, names: list[str], width: int = 26) -> None:
    """One row per subset: AUFROC_10 % [FPpI / sensitivity at the stored γ] per method, then
    the paired Δ against a reference model (``evaluate(..., versus=...)``) when there is one."""
    print(f"{'subset':{width}s} {'n':>4s} " + " ".join(f"{n[:16]:>16s}" for n in names))
    for sub, r in results.items():
        row = []
        for n in names:
            m = r["methods"].get(n)
            txt = "" if m is None else f"{100 * m['aufroc_10']:.1f}"
            if m is not None and "at_stored_threshold" in m:
                a = m["at_stored_threshold"]
                txt += f" [{a['fppi']:.2f}/{100 * a['sensitivity']:.0f}%]"
            row.append(f"{txt:>16s}")
        print(f"{sub:{width}s} {r['images']:4d} " + " ".join(row))
        for ref, n, c in reference_deltas(r):
            lo, hi = c["delta_ci95"]
            d = f"{100 * c['delta']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"
            print(f"{'':{width + 5}s}{n} Δ {ref}: {d}")


def print_table(summary: dict) -> None:
    print(f"\n{summary['task'].upper()} robustness (AUFROC_10 %, 95% CI)")
    print(f"{'subset':28s} {'method':34s} {'AUFROC_10':>22s} {'FPpI@thr':>9s} {'sens@thr':>9s}")
    for sub, d in {**summary["subsets"], **summary["extra_tests"]}.items():
        for name, r in d["methods"].items():
            lo, hi = r["aufroc_10_ci95"]
            at = r.get("at_stored_threshold")
            a = f"{100 * r['aufroc_10']:6.2f} ({100 * lo:5.1f}-{100 * hi:5.1f})"
            extra = f"{at['fppi']:9.2f} {100 * at['sensitivity']:8.1f}%" if at else ""
            print(f"{sub:28s} {name:34s} {a:>22s} {extra}")
        for ref, name, c in reference_deltas(d):
            lo, hi = c["delta_ci95"]
            print(
                f"{sub:28s} {name + ' Δ ' + ref:34s} "
                f"{100 * c['delta']:+6.2f} ({100 * lo:+5.1f} to {100 * hi:+5.1f})"
            )


if __name__ == "__main__":
    raise SystemExit(main())
