"""`gravity train` says what it trains on before training (issue 13): images, lesions, unused
annotation files, all recorded in the split description (model provenance)."""

from __future__ import annotations

import logging

import numpy as np
import tifffile

from training.config import load_config
from training.data import open_split


def test_open_split_reports_images_lesions_and_unused_files(tmp_path, caplog, make_tiny_config):
    root = tmp_path / "data"
    root.mkdir()
    for k in range(6):
        tifffile.imwrite(root / f"img{k}.tif", np.full((48, 48), 10 * k, np.uint16))
        if k % 2 == 0:
            rows = "".join(f"{5 + j},{6 + j},2\n" for j in range(k + 1))
            (root / f"img{k}.csv").write_text("y,x,radius\n" + rows)
    n_lesions = 1 + 3 + 5
    (root / "img99.csv").write_text("y,x,radius\n3,3,2\n")  # its image was renamed away
    cfg = load_config(make_tiny_config(tmp_path / "c.yaml", data__root=str(root)))
    with caplog.at_level(logging.INFO, logger="training.data"):
        split = open_split(cfg.data, tmp_path / "run", seed=0)
    ann = split.description["annotations"]
    assert ann["n_images"] == 6 and ann["n_lesions"] == n_lesions
    assert ann["n_unused_annotation_files"] == 1
    assert ann["unused_annotation_files"][0].endswith("img99.csv")
    text = caplog.text
    assert f"6 images, {n_lesions} lesions, 1 annotation files unused" in text
    assert "img99.csv: annotation file matched to no image" in text


def test_unknown_synthetic_option_is_a_config_error(tmp_path):
    import pytest

    from training.config import DataConfig
    from training.data import DataConfigError, ensure_synthetic

    data = DataConfig(synthetic={"recipe": "mc-tiny", "n_trian": 3}, cache_dir=str(tmp_path))
    with pytest.raises(DataConfigError, match=r"data.synthetic: .*n_trian"):
        ensure_synthetic(data, tmp_path / "run")


def test_training_errors_print_without_a_traceback(tmp_path, capsys, make_tiny_config):
    from training.cli import main

    cfg = make_tiny_config(tmp_path / "c.yaml")
    rc = main(
        ["train", str(cfg), "--out", str(tmp_path / "run"), "--device", "potato", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "gravity train: error: --device 'potato'" in err
    assert "Traceback" not in err
