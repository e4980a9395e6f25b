"""CSV reading/writing and ``gravity evaluate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gravity.evaluation.io import (
    CSVFormatError,
    read_ground_truth_csv,
    read_image_list,
    read_predictions_csv,
    write_ground_truth_csv,
    write_predictions_csv,
)
from napari_gravity.types import Detections
from training.cli import main

GT = """image,y,x,radius
a,10,10,2
a,50,50,3
b,20,20,1
c,,,
"""
PRED = """image,y,x,score
a,11,10,0.9
a,12,10,0.8
a,100,100,0.7
b,20,21,0.6
c,5,5,0.5
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_roundtrip(tmp_path):
    preds = {
        "img,1": Detections([[1.5, 2.25], [3, 4]], [0.9, 0.1]),
        "empty": Detections(),
    }
    p = write_predictions_csv(tmp_path / "p.csv", preds)
    back = read_predictions_csv(p)
    assert list(back) == ["img,1", "empty"]
    np.testing.assert_allclose(back["img,1"].points, preds["img,1"].points)
    np.testing.assert_allclose(back["img,1"].scores, [0.9, 0.1])
    assert len(back["empty"]) == 0
    g = write_ground_truth_csv(
        tmp_path / "g.csv",
        {"x": (np.array([[1.0, 2.0]]), np.array([1.5])), "y": (np.zeros((0, 2)), [])},
    )
    gt = read_ground_truth_csv(g)
    np.testing.assert_allclose(gt["x"][0], [[1, 2]])
    np.testing.assert_allclose(gt["x"][1], [1.5])
    assert len(gt["y"][0]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,y,x\na,1,2\n", r"p\.csv, line 1: missing column\(s\) score"),
        ("image,y,x,score\na,1,2,0.5\nb,1,zz,0.3\n", r"p\.csv, line 3: x 'zz' is not a number"),
        ("image,y,x,score\na,1,2,\n", r"p\.csv, line 2: missing value for score"),
        ("image,y,x,score\n,1,2,0.5\n", r"p\.csv, line 2: empty image id"),
        ("image,y,x,score\na,1,2,nan\n", r"p\.csv, line 2: score must be finite"),
        ("", r"p\.csv: empty file"),
    ],
)
def test_bad_prediction_csv(tmp_path, text, message):
    p = write(tmp_path, "p.csv", text)
    with pytest.raises(CSVFormatError, match=message):
        read_predictions_csv(p)


def test_bad_ground_truth_and_lists(tmp_path):
    g = write(tmp_path, "g.csv", "image,y,x,radius\na,1,2,3\na,1,2,-1\n")
    with pytest.raises(CSVFormatError, match=r"g\.csv, line 3: negative radius"):
        read_ground_truth_csv(g)
    g = write(tmp_path, "g2.csv", "image,y,x\na,1,2\n")
    assert np.isnan(read_ground_truth_csv(g)["a"][1][0])
    assert read_image_list(write(tmp_path, "l.txt", "# ids\na\nb\n\na\n")) == ["a", "b"]
    assert read_image_list(write(tmp_path, "l.csv", "image,patient\na,p\nc,q\n")) == ["a", "c"]
    with pytest.raises(CSVFormatError, match="needs an 'image' column"):
        read_image_list(write(tmp_path, "l2.csv", "name,patient\na,p\n"))
    with pytest.raises(FileNotFoundError):
        read_predictions_csv(tmp_path / "missing.csv")


def test_cli_end_to_end(tmp_path, capsys):
    g = write(tmp_path, "G.csv", GT)
    p = write(tmp_path, "P.csv", PRED)
    q = write(tmp_path, "Q.csv", "image,y,x,score\na,11,10,0.5\nb,80,21,0.6\n")
    imgs = write(tmp_path, "images.txt", "a\nb\nc\nd\n")
    out = tmp_path / "out"
    rc = main(
        ["evaluate", "--predictions", str(p), "--ground-truth", str(g), "--images", str(imgs),
         "--bootstrap", "100", "--compare", str(q), "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    # 4 images (d is lesion-free with no prediction), 3 lesions
    assert rep["counts"]["images"] == 4 and rep["counts"]["lesions"] == 3
    # curve: TP .9, dup .8, FP .7, TP .6, FP .5 over 4 images
    np.testing.assert_allclose(rep["fppi"], [0, 0, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(rep["tpr"], [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert rep["thresholds"][0] is None
    area = (1 / 3 * 0.25 + 1 / 3 * 0.25 + 2 / 3 * 0.25 + 2 / 3 * 9.25) / 10
    assert rep["aufroc"] == pytest.approx(area)
    assert rep["bootstrap"]["n_resamples"] == 100
    assert rep["compare"]["method"] == "Q"
    assert 0 <= rep["paired"]["p_value"] <= 1
    for f in ("report.md", "froc_linear.png", "froc_linear.svg", "froc_log.png", "froc_log.svg"):
        assert (out / f).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| P |" in md and "ΔAUFROC" in md
    assert "AUFROC" in capsys.readouterr().out

    # duplicates dropped, fixed distance, without an image list (the union, with a note)
    out2 = tmp_path / "out2"
    rc = main(["evaluate", "-p", str(p), "-g", str(g), "--duplicates", "drop", "--match", "3",
               "--no-plots", "--out", str(out2)])  # fmt: skip
    assert rc == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert rep2["counts"]["images"] == 3 and rep2["counts"]["duplicates"] == 1
    assert rep2["settings"] == {
        "match": 3.0,
        "duplicates": "drop",
        "fp_images": "all",
        "masks": False,
    }
    assert any("union" in n for n in rep2["notes"])


def test_cli_errors(tmp_path, capsys):
    g = write(tmp_path, "G.csv", GT)
    bad = write(tmp_path, "P.csv", "image,y,x,score\na,1,2,0.5\na,1,2,high\n")
    rc = main(["evaluate", "-p", str(bad), "-g", str(g), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "P.csv, line 3" in err and "'high' is not a number" in err
    p = write(tmp_path, "P2.csv", PRED)
    lst = write(tmp_path, "l.txt", "a\nb\n")
    rc = main(
        ["evaluate", "-p", str(p), "-g", str(g), "--images", str(lst), "--out", str(tmp_path / "o")]
    )
    assert rc == 1
    assert "not in" in capsys.readouterr().err


def test_write_json_is_strict(tmp_path):
    from napari_gravity.evaluation.report import write_json

    p = write_json(
        tmp_path / "r.json", {"a": float("nan"), "b": np.array([1.0, np.inf]), "c": np.int64(3)}
    )
    assert json.loads(p.read_text()) == {"a": None, "b": [1.0, None], "c": 3}
