"""Manifest validity, reader (ours / not ours), writer round trip, sample materialisation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_gravity.plugin import _reader, _writer
from napari_gravity.plugin import review as rv
from napari_gravity.plugin.sidecar import Review, sidecar_path, write_review

ROOT = Path(__file__).resolve().parents[2]


def test_manifest_validates_and_imports():
    from npe2 import PluginManifest

    # one source of truth: the package's manifest (what npe2 loads through the entry point, and
    # what a wheel ships) is the only file; the top-level napari.yaml is a link to it
    pkg, top = ROOT / "napari_gravity" / "napari.yaml", ROOT / "napari.yaml"
    assert pkg.is_file() and not pkg.is_symlink()
    assert top.is_symlink() and top.resolve() == pkg.resolve()
    assert os.readlink(top) == os.path.join("napari_gravity", "napari.yaml")  # relative: portable
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-gravity"]
    assert ep.value == "napari_gravity:napari.yaml"
    pm = PluginManifest.from_file(pkg)
    pm.validate_imports()  # every python_name resolves
    assert {w.display_name for w in pm.contributions.widgets} == {
        "Detect lesions",
        "Review",
        "Evaluate",
        "Retrain",
    }
    assert {s.key for s in pm.contributions.sample_data} == {"mammogram", "fundus", "retina"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("npe2")), "validate", "napari-gravity"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_reader_refuses_files_that_are_not_ours(tmp_path):
    napari_csv = tmp_path / "pts.csv"
    napari_csv.write_text("index,axis-0,axis-1\n0,1,2\n")
    other_xml = tmp_path / "a.xml"
    other_xml.write_text("<root><a/></root>")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    side = tmp_path / "x.review.json"
    side.write_text("{}")
    for p in (napari_csv, other_xml, txt, side, tmp_path):
        assert _reader.get_reader(str(p)) is None, p
    assert _reader.get_reader([str(txt), str(napari_csv)]) is None


def test_reader_opens_image_with_ground_truth_and_sidecar(image_folder):
    img = image_folder[0]
    pts = np.array([[20.0, 30.0], [100.0, 120.5]])
    feats = rv.make_features([0.8, 1.0], ["model", "user"], ["rejected", "added"])
    write_review(sidecar_path(img), Review(img.name, pts, feats, "in_progress", (256, 256)))
    reader = _reader.get_reader(str(img))
    assert reader is not None
    layers = reader(str(img))
    kinds = [t[2] for t in layers]
    assert kinds == ["image", "points", "points"]
    image, meta, _ = layers[0]
    assert image.shape == (256, 256) and meta["metadata"]["path"] == str(img)
    gt_pts, gt_kw, _ = layers[1]
    from napari_gravity.data.annotations import read_points_csv

    ref = read_points_csv(img.with_suffix(".csv"))
    np.testing.assert_allclose(gt_pts, ref.points)
    np.testing.assert_allclose(gt_kw["features"]["radius"], ref.radii)
    det_pts, det_kw, _ = layers[2]
    np.testing.assert_allclose(det_pts, pts)
    assert det_kw["features"].to_dict("list") == feats.to_dict("list")
    assert det_kw["metadata"]["gravity"]["review_status"] == "in_progress"


def test_reader_reads_our_csv_and_inbreast_xml(tmp_path):
    from napari_gravity.data.annotations import write_inbreast_xml, write_points_csv

    csv = tmp_path / "gt.csv"
    write_points_csv(csv, [[5.0, 6.0], [7.0, 8.0]], [2.0, 3.0], status=["accepted", "rejected"])
    (data, kw, kind) = _reader.get_reader(str(csv))(str(csv))[0]
    assert kind == "points" and data.shape == (2, 2)
    assert kw["features"]["status"].tolist() == ["accepted", "rejected"]
    xml = tmp_path / "20586908.xml"
    write_inbreast_xml(xml, [[40.0, 50.0]], [3.0])
    (data, kw, kind) = _reader.get_reader(str(xml))(str(xml))[0]
    np.testing.assert_allclose(data, [[40.0, 50.0]], atol=0.01)
    np.testing.assert_allclose(kw["features"]["radius"], [3.0], atol=0.01)


def test_writer_keeps_features(tmp_path):
    path = str(tmp_path / "out.csv")
    feats = pd.DataFrame(
        {"score": [0.25, 1.0], "source": ["model", "user"], "status": ["accepted", "added"]}
    )
    written = _writer.write_points(
        path, np.array([[1.0, 2.0], [3.0, 4.0]]), {"features": feats, "size": 8}
    )
    assert written == [path]
    (data, kw, _) = _reader.get_reader(path)(path)[0]
    np.testing.assert_allclose(data, [[1.0, 2.0], [3.0, 4.0]])
    got = kw["features"]
    assert got["source"].tolist() == ["model", "user"]
    assert got["status"].tolist() == ["accepted", "added"]
    np.testing.assert_allclose(got["score"], [0.25, 1.0])
    np.testing.assert_allclose(got["radius"], [4.0, 4.0])  # no radius feature: size / 2
    with pytest.raises(ValueError, match=r"out\.csv"):
        _writer.write_points(path, np.zeros(3), {})


def test_mammogram_sample_is_written_once(gravity_env):
    from napari_gravity.plugin import _sample_data

    layers = _sample_data.mammogram(shape=(128, 128), seed=3)
    path = Path(layers[0][1]["metadata"]["path"])
    assert path.parent == gravity_env / "samples" and path.exists()
    assert path.with_suffix(".csv").exists()
    mtime = path.stat().st_mtime_ns
    again = _sample_data.mammogram(shape=(128, 128), seed=3)
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(layers[0][0], again[0][0])
    assert len(layers[1][0]) > 0  # ground truth of the sample


@pytest.mark.parametrize("name", ["fundus", "retina"])
def test_retina_samples_have_microaneurysms(gravity_env, name):
    from napari_gravity.plugin import _sample_data

    layers = getattr(_sample_data, name)()
    (image, meta, kind), (gt, gt_kw, gt_kind) = layers[:2]
    assert kind == "image" and image.ndim == 2 and gt_kind == "points"
    assert len(gt) > 0 and np.all(gt_kw["features"]["radius"] > 0)
    assert np.all((gt >= 0) & (gt < np.array(image.shape)))
    assert Path(meta["metadata"]["path"]).with_suffix(".csv").exists()
