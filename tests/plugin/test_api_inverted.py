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
