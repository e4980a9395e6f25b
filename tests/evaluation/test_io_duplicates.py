"""Duplicated ground-truth rows and duplicated CSV columns (issue 13)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gravity.data.annotations import AnnotationError, read_points_csv
from napari_gravity.evaluation.io import (
    CSVFormatError,
    DuplicateRowsWarning,
    read_ground_truth_csv,
    read_predictions_csv,
)


def test_duplicated_ground_truth_rows_are_reported_and_counted_once(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("image,y,x,radius\na,10,10,3\na,10,10,3\na,40,40,3\nb,5,5,2\nb,5.0001,5,2\n")
    with pytest.warns(
        DuplicateRowsWarning, match=r"gt\.csv: 2 duplicated .*line 3 repeats line 2 \(a\)"
    ):
        out = read_ground_truth_csv(gt)
    assert len(out["a"][0]) == 2 and len(out["b"][0]) == 1
    with pytest.raises(CSVFormatError, match=r"gt\.csv: 2 duplicated"):
        read_ground_truth_csv(gt, duplicates="error")
    assert len(read_ground_truth_csv(gt, duplicates="keep")["a"][0]) == 3


def test_evaluate_cli_reports_duplicates_and_keeps_full_sensitivity(tmp_path, capsys):
    gt = tmp_path / "gt.csv"
    gt.write_text("image,y,x,radius\na,10,10,3\na,10,10,3\na,40,40,3\n")
    pred = tmp_path / "p.csv"
    pred.write_text("image,y,x,score\na,10,10,0.9\na,40,40,0.8\n")
    from training.cli import main

    rc = main(
        [
            "evaluate",
            "-p",
            str(pred),
            "-g",
            str(gt),
            "--images",
            str(_ids(tmp_path)),
            "--out",
            str(tmp_path / "ev"),
            "--no-plots",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "1 duplicated ground-truth row" in err
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["counts"]["lesions"] == 2 and rep["counts"]["tp"] == 2
    assert rep["sensitivity_at"]["8"] == 1.0  # not capped at 2/3
    assert any("duplicated" in n for n in rep.get("notes", []))


@pytest.mark.parametrize("header", ["image,y,x,y,score", "image,Y,x,y,score"])
def test_duplicated_column_is_an_error(tmp_path, header):
    p = tmp_path / "p.csv"
    p.write_text(header + "\na,1,2,3,0.5\n")
    with pytest.raises(CSVFormatError, match=r"p\.csv, line 1: duplicated column\(s\) 'y'"):
        read_predictions_csv(p)
    q = tmp_path / "IMG.csv"
    q.write_text("y,x,radius,x\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match=r"IMG\.csv, line 1: duplicated column\(s\) 'x'"):
        read_points_csv(q)
    np.testing.assert_equal(len(read_ground_truth_csv(_ok(tmp_path))["a"][0]), 1)


def _ok(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text("image,y,x,radius\na,1,1,1\n")
    return p


def _ids(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("a\n")
    return p


def test_bbox_without_radius_names_the_ground_truth_file(tmp_path, capsys):
    from training.cli import main

    gt = tmp_path / "gt_nor.csv"
    gt.write_text("image,y,x\na,10,10\n")
    pred = tmp_path / "p.csv"
    pred.write_text("image,y,x,score\na,10,10,0.9\n")
    rc = main(["evaluate", "-p", str(pred), "-g", str(gt), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 1 and f"{gt}: --match bbox needs a radius" in err and "Traceback" not in err
    rc = main(
        [
            "evaluate",
            "-p",
            str(pred),
            "-g",
            str(gt),
            "--match",
            "3",
            "--no-plots",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert rc == 0


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--max-fppi", "inf"], "--max-fppi must be a positive finite number"),
        (["--max-fppi", "nan"], "--max-fppi must be a positive finite number"),
        (["--sensitivity-at", "nan"], "expected positive finite FPpI values"),
        (["--sensitivity-at", "1,inf"], "expected positive finite FPpI values"),
    ],
)
def test_non_finite_evaluate_flags_are_refused(tmp_path, capsys, flags, match):
    from training.cli import main

    gt = _ok(tmp_path)
    pred = tmp_path / "p.csv"
    pred.write_text("image,y,x,score\na,1,1,0.9\n")
    try:
        rc = main(
            ["evaluate", "-p", str(pred), "-g", str(gt), "--out", str(tmp_path / "e"), *flags]
        )
    except SystemExit as exc:  # argparse type errors exit 2 with a usage message
        rc = exc.code
    err = capsys.readouterr().err
    assert rc in (1, 2) and match in err and "Traceback" not in err
