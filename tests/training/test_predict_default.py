"""`gravity predict default`: each image goes to the bundled model of its task."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from napari_gravity.core.registry import default_model_path
from training.cli import main


def test_a_mixed_folder_is_routed_per_image(tmp_path):
    if default_model_path("ma") is None or default_model_path("mc") is None:
        pytest.fail("both bundled default models must be installed")
    from skimage import data

    from napari_gravity.data.synthetic import synth_mammogram

    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "eye.jpg", data.retina()[500:756, 400:656], quality=92)
    iio.imwrite(folder / "breast.png", synth_mammogram((192, 192), 3).image.astype(np.uint16))
    out = tmp_path / "out"
    assert main(["predict", "default", str(folder), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_image = {r["image"]: r["model"] for r in summary["images"]}
    assert by_image == {"eye": "default_ma", "breast": "default_mc"}
    assert set(summary["models"]) == {"default_ma", "default_mc"}
    for spec, info in summary["models"].items():
        assert info["task"] == spec.split("_")[1]
