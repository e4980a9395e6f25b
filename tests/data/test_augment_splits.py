"""Flips, resizes and tiles map points exactly; patient-level splits never leak patients."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_gravity.data.augment import (
    flip_augmentations,
    flip_sample,
    map_points_resize,
    random_tiles,
    resize_sample,
)
from napari_gravity.data.splits import (
    Fold,
    SplitError,
    Splits,
    check_splits,
    kfold_patients,
    load_splits,
    save_splits,
)
from napari_gravity.types import Sample


def _blob_sample(shape=(60, 80), pts=((10.0, 15.0), (40.0, 70.0), (0.0, 0.0)), sigma=1.5):
    """An image holding a Gaussian blob exactly at each point (integer centres)."""
    img = np.zeros(shape)
    for y, x in pts:
        img[int(y), int(x)] = 1.0
    img = ndi.gaussian_filter(img, sigma)
    mask = np.zeros(shape, bool)
    mask[5:, 3:] = True
    return Sample(img.astype(np.float32), np.array(pts), np.array([1.0, 2.0, 3.0]), mask, "s")


@pytest.mark.parametrize("axes", [0, 1, (0, 1), "hv"])
def test_flip_maps_points_exactly(axes):
    s = _blob_sample()
    f = flip_sample(s, axes)
    for (y, x), (y0, x0) in zip(f.points, s.points, strict=True):
        assert f.image[round(y), round(x)] == s.image[int(y0), int(x0)]
    h, w = s.image.shape
    ax = {0: (0,), 1: (1,), (0, 1): (0, 1), "hv": (0, 1)}[axes]
    exp = s.points.copy()
    for a in ax:
        exp[:, a] = (h, w)[a] - 1 - exp[:, a]
    np.testing.assert_array_equal(f.points, exp)
    np.testing.assert_array_equal(f.mask, np.flip(s.mask, ax))
    np.testing.assert_array_equal(flip_sample(f, axes).points, s.points)  # involution
    assert len(flip_augmentations(s)) == 4


@pytest.mark.parametrize("new_shape", [(30, 40), (120, 96), (45, 200)])
def test_resize_maps_blob_centres(new_shape):
    rng = np.random.default_rng(3)
    shape = (90, 120)
    pts = np.stack([rng.uniform(15, 75, 4), rng.uniform(15, 105, 4)], 1)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 4.0**2)) for y, x in pts)
    s = Sample(img.astype(np.float32), pts, np.full(4, 2.0), spacing=(0.07, 0.07))
    r = resize_sample(s, new_shape)
    assert r.image.shape == new_shape
    sy, sx = new_shape[0] / shape[0], new_shape[1] / shape[1]
    np.testing.assert_allclose(r.points, (pts + 0.5) * [sy, sx] - 0.5)
    # the mapped point is where the blob is: intensity-weighted centroid around it
    for y, x in r.points:
        y0, y1 = int(y - 6 * sy), int(y + 6 * sy) + 1
        x0, x1 = int(x - 6 * sx), int(x + 6 * sx) + 1
        win = r.image[y0:y1, x0:x1].astype(float)
        win = win - win.min()
        gy, gx = np.mgrid[y0:y1, x0:x1]
        cy, cx = (win * gy).sum() / win.sum(), (win * gx).sum() / win.sum()
        assert abs(cy - y) < 0.25 and abs(cx - x) < 0.25
    assert r.spacing == pytest.approx((0.07 / sy, 0.07 / sx))
    np.testing.assert_allclose(map_points_resize(r.points, new_shape, shape), pts)


def test_random_tiles_shift_points_and_balance():
    s = _blob_sample((200, 220), pts=((50.0, 60.0), (150.0, 170.0), (100.0, 30.0)))
    tiles = random_tiles(s, 64, n=20, pos_fraction=0.5, rng=0)
    assert len(tiles) == 20
    n_pos = 0
    for t in tiles:
        assert t.image.shape == (64, 64)
        top, left = (int(v) for v in t.image_id.split("@")[1].split(","))
        np.testing.assert_array_equal(t.image, s.image[top : top + 64, left : left + 64])
        for y, x in t.points:
            yy, xx = int(y) + top, int(x) + left
            assert [yy, xx] in s.points.astype(int).tolist()
        n_pos += len(t.points) > 0
        assert t.mask is not None and t.mask.mean() > 0.4
    assert n_pos >= 10  # the lesion-centred half always holds a lesion
    again = random_tiles(s, 64, n=20, pos_fraction=0.5, rng=0)
    assert [t.image_id for t in again] == [t.image_id for t in tiles]
    free = Sample(s.image, mask=s.mask)
    assert all(len(t.points) == 0 for t in random_tiles(free, 32, 5, 0.5, rng=1))
    small = random_tiles(Sample(np.ones((20, 20), np.float32), [[5, 5]], [1]), 32, 2, 1.0, rng=2)
    assert small[0].image.shape == (32, 32) and small[0].mask.sum() == 400


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=3, max_size=25),
    k=st.integers(2, 3),
    seed=st.integers(0, 1000),
)
def test_kfold_never_puts_a_patient_in_two_parts(sizes, k, seed):
    pairs = [(f"p{p}_img{i}", f"p{p}") for p, n in enumerate(sizes) for i in range(n)]
    if len(sizes) < k:
        with pytest.raises(SplitError):
            kfold_patients(pairs, k)
        return
    sp = kfold_patients(pairs, k, val_fraction=0.25, seed=seed)
    check_splits(sp)
    all_ids = {i for i, _ in pairs}
    tests = [set(f.test) for f in sp.folds]
    assert set().union(*tests) == all_ids  # each image tested exactly once
    assert sum(len(t) for t in tests) == len(all_ids)
    for f in sp.folds:
        assert set(f.train) | set(f.val) | set(f.test) == all_ids
        pat = {
            part: {i.split("_")[0] for i in ids}
            for part, ids in (("tr", f.train), ("va", f.val), ("te", f.test))
        }
        assert (
            not (pat["tr"] & pat["va"])
            and not (pat["tr"] & pat["te"])
            and not (pat["va"] & pat["te"])
        )
    assert kfold_patients(pairs, k, val_fraction=0.25, seed=seed).to_dict() == sp.to_dict()


def test_splits_save_load_and_bad_files(tmp_path):
    pairs = {f"i{j}": f"p{j // 3}" for j in range(30)}
    sp = kfold_patients(pairs, 2, val_fraction=0.2, seed=5)
    p = save_splits(tmp_path / "s.json", sp)
    back = load_splits(p)
    assert back.to_dict() == sp.to_dict()
    assert all(f.val for f in back.folds)
    leak = Splits([Fold(["i0"], [], ["i1"])], {"i0": "p0", "i1": "p0"})
    save_splits(tmp_path / "leak.json", leak)
    with pytest.raises(SplitError, match=r"leak\.json: fold 0: patient 'p0'"):
        load_splits(tmp_path / "leak.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SplitError, match="line 1"):
        load_splits(tmp_path / "bad.json")
    (tmp_path / "nofolds.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(SplitError, match="'folds'"):
        load_splits(tmp_path / "nofolds.json")
