"""The plugin's model detector inverts an inverted mammogram back, as ``gravity predict`` does,
and says so (no viewer needed)."""

from __future__ import annotations

import numpy as np


def test_model_detector_inverts_bright_air_back_and_notes_it():
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.synthetic import synth_mammogram
    from napari_gravity.plugin import _api

    x = synth_mammogram((512, 400), 3, breast=True).image.astype(np.float64)
    up = (x - x.min()).astype(np.float32)
    down = (x.max() - x).astype(np.float32)  # inverted back: `up` exactly
    det = _api.load_detector(default_model_path("mc"), device="cpu")
    a = det.raw(up)
    assert det.note == ""
    b = det.raw(down)
    assert "inverted back" in det.note
    np.testing.assert_array_equal(b.points, a.points)
    np.testing.assert_array_equal(b.scores, a.scores)


def test_model_detector_takes_a_colour_photographs_field_of_view_from_its_file(tmp_path):
    """The dock detects the green channel the layer holds; for a colour file it reads the
    brightest channel again (``fov_source_of``) so that a dark photograph's grey border is not
    taken for retina."""
    import imageio.v3 as iio
    from skimage import data

    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.masks import fundus_mask
    from napari_gravity.data.readers import read_image
    from napari_gravity.plugin import _api

    rgb = data.retina().astype(np.float32)
    fov = fundus_mask(rgb[..., 0], erode=0)
    dark = rgb * 0.35
    for k, level in enumerate((42, 30, 26)):
        dark[..., k][~fov] = level
    path = tmp_path / "dark.png"
    iio.imwrite(path, np.clip(dark, 0, 255).astype(np.uint8))
    green = read_image(path).image
    src = _api.fov_source_of(path)
    assert src is not None and _api.fov_source_of(None) is None
    assert _api.fov_source_of(tmp_path / "missing.png") is None
    det = _api.load_detector(default_model_path("ma"), device="cpu", tta="off")
    iou = lambda m: (m & fov).sum() / (m | fov).sum()  # noqa: E731
    assert iou(det.raw(green).mask) < 0.9  # the green channel alone: the whole frame
    assert iou(det.raw(green, None, src).mask) > 0.95
