"""``gravity evaluate``: FROC report, statistics and plots from CSV files."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from napari_gravity.evaluation.froc import DEFAULT_SENSITIVITY_FPPI
from napari_gravity.fileio import atomic_write_text

HELP = "FROC evaluation of predictions against ground truth (report.json, report.md, plots)"


def _match(value: str) -> str | float:
    if value == "bbox":
        return "bbox"
    try:
        d = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--match must be 'bbox' or a distance in pixels, got {value!r}"
        ) from None
    if not d > 0:
        raise argparse.ArgumentTypeError(f"--match distance must be positive, got {value!r}")
    return d


def _fppi_list(value: str) -> list[float]:
    try:
        out = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {value!r}"
        ) from None
    if not out or any(not (math.isfinite(v) and v > 0) for v in out):
        raise argparse.ArgumentTypeError(f"expected positive finite FPpI values, got {value!r}")
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description=HELP + ". P.csv has columns image,y,x,score; G.csv image,y,x,radius.",
    )
    p.add_argument("--predictions", "-p", required=True, metavar="P.csv", help="image,y,x,score")
    p.add_argument("--ground-truth", "-g", required=True, metavar="G.csv", help="image,y,x,radius")
    p.add_argument(
        "--images",
        metavar="LIST",
        help="images evaluated (text file, one id per line, or CSV with an 'image' column); "
        "default: every image named in G.csv or P.csv. Lesion-free images without predictions "
        "count only if listed here (or declared by an 'image,,,' row).",
    )
    p.add_argument(
        "--match",
        type=_match,
        default="bbox",
        metavar="bbox|DIST",
        help="TP criterion: 'bbox' (distance <= max(2*radius, 1) px, default) or DIST pixels",
    )
    p.add_argument("--max-fppi", type=float, default=10.0, help="γ of AUFROC_γ (default 10)")
    p.add_argument(
        "--sensitivity-at",
        type=_fppi_list,
        default=list(DEFAULT_SENSITIVITY_FPPI),
        metavar="F1,F2,...",
        help="FPpI values for the sensitivity table (default 0.5,1,2,4,8)",
    )
    p.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples (0 = none)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--duplicates",
        choices=("fp", "drop"),
        default="fp",
        help="extra predictions on an already-detected lesion: FP (default) or dropped",
    )
    p.add_argument(
        "--fp-images",
        choices=("all", "lesion-free"),
        default="all",
        help="count FPs on all images (default) or only on lesion-free images",
    )
    p.add_argument("--compare", metavar="Q.csv", help="a second method's predictions (paired)")
    p.add_argument("--name", default=None, help="method name (default: the P.csv file stem)")
    p.add_argument("--compare-name", default=None, help="second method's name")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG/SVG plots")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from napari_gravity.evaluation.bootstrap import bootstrap_froc, compare_bootstrap
    from napari_gravity.evaluation.froc import froc_curve
    from napari_gravity.evaluation.io import (
        read_ground_truth_csv,
        read_image_list,
        read_predictions_csv,
    )
    from napari_gravity.evaluation.report import (
        build_report,
        comparison_dict,
        report_markdown,
        write_json,
    )

    if args.bootstrap < 0:
        raise ValueError("--bootstrap must be >= 0")
    if not (math.isfinite(args.max_fppi) and args.max_fppi > 0):
        raise ValueError(f"--max-fppi must be a positive finite number, got {args.max_fppi}")
    import sys
    import warnings

    from napari_gravity.evaluation.io import DuplicateRowsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateRowsWarning)
        gt = read_ground_truth_csv(args.ground_truth)
    notes = []
    for w in caught:
        if issubclass(w.category, DuplicateRowsWarning):
            print(f"gravity evaluate: warning: {w.message}", file=sys.stderr)
            notes.append(f"warning: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.match == "bbox":
        no_radius = [k for k, (_, r) in gt.items() if len(r) and not np.all(np.isfinite(r))]
        if no_radius:
            raise ValueError(
                f"{args.ground_truth}: --match bbox needs a radius for every lesion, but "
                f"{len(no_radius)} image(s) have lesions without one (e.g. {no_radius[0]!r}); "
                "add a 'radius' column or pass --match DIST (pixels)"
            )
    preds = read_predictions_csv(args.predictions)
    other = read_predictions_csv(args.compare) if args.compare else None
    if args.images:
        ids = read_image_list(args.images)
        notes.append(f"image list from {args.images} ({len(ids)} images)")
        known = set(ids)
        for what, m, f in (
            ("ground truth", gt, args.ground_truth),
            ("predictions", preds, args.predictions),
            ("predictions", other or {}, args.compare),
        ):
            extra = [k for k in m if k not in known]
            if extra:
                raise ValueError(
                    f"{f}: {what} for {len(extra)} image(s) not in {args.images}: "
                    f"{', '.join(extra[:5])}"
                )
    else:
        ids = list(dict.fromkeys([*gt, *preds, *(other or {})]))
        notes.append(
            "no --images list: the evaluated images are the union of the images named in the "
            "ground truth and prediction CSVs; lesion-free images with no prediction are not "
            "counted unless listed (pass --images)"
        )
    name_a = args.name or Path(args.predictions).stem
    name_b = args.compare_name or (Path(args.compare).stem if args.compare else "B")
    if other is not None and name_b == name_a:
        name_b += " (compare)"
    kw = {"match": args.match, "duplicates": args.duplicates, "fp_images": args.fp_images}
    res_a = froc_curve(preds, gt, ids, **kw)
    res_b = froc_curve(other, gt, ids, **kw) if other is not None else None
    sens = list(args.sensitivity_at)
    bkw = {"max_fppi": args.max_fppi, "sensitivity_fppi": sens}
    boot_a = boot_b = cmp = None
    if args.bootstrap and res_b is not None:
        cmp = compare_bootstrap(res_a, res_b, args.bootstrap, args.seed, **bkw)
        boot_a, boot_b = cmp.a, cmp.b
    elif args.bootstrap:
        boot_a = bootstrap_froc(res_a, args.bootstrap, args.seed, **bkw)
    rkw = {"max_fppi": args.max_fppi, "sensitivity_fppi": sens, "notes": notes}
    rep_a = build_report(res_a, name=name_a, bootstrap=boot_a, **rkw)
    reports = [rep_a]
    report = dict(rep_a)
    if res_b is not None:
        rep_b = build_report(res_b, name=name_b, bootstrap=boot_b, **rkw)
        reports.append(rep_b)
        report["compare"] = rep_b
        report["paired"] = comparison_dict(cmp, name_a, name_b) if cmp is not None else None
    report["inputs"] = {
        "predictions": str(args.predictions),
        "ground_truth": str(args.ground_truth),
        "images": str(args.images) if args.images else None,
        "compare": str(args.compare) if args.compare else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    md = "# FROC evaluation\n\n" + report_markdown(reports, report.get("paired"))
    atomic_write_text(out / "report.md", md)
    written = [out / "report.json", out / "report.md"]
    if not args.no_plots:
        from napari_gravity.evaluation.plots import save_froc_plots

        written += save_froc_plots(out, reports, max_fppi=args.max_fppi)
    print(report_markdown(reports, report.get("paired")), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
