"""The one atomic-write helper every writer uses (CSV, sidecar, splits, models, checkpoints)."""

import pytest

from napari_gravity.fileio import atomic_write, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.csv"
    atomic_write_text(p, "y,x\r\n1,2\n", fsync=True)
    assert p.read_bytes() == b"y,x\r\n1,2\n"  # newlines written as given
    atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n"
    assert [x.name for x in p.parent.iterdir()] == ["a.csv"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, half_then_fail)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_model_files_get_ordinary_permissions(tmp_path):
    """safetensors writes through its own private (0600) temp file; the model file must still
    be readable as any file the user writes (process umask), e.g. by a shared model folder."""
    import os
    import stat

    import torch

    from napari_gravity.core.config import GravityConfig
    from napari_gravity.core.model import GravityNet
    from napari_gravity.core.model_io import save_model

    torch.manual_seed(0)
    cfg = GravityConfig(backbone="resnet18", stride=8, step=4, head_channels=32)
    path = save_model(tmp_path / "m.safetensors", GravityNet(cfg), cfg, {"task": "mc"})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
