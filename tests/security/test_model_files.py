"""Hostile model files and checkpoints (issue 13): refused from the header, named, no code run."""

from __future__ import annotations

import json
import os
import pickle
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from napari_gravity.core import GravityConfig, GravityNet, ModelFileError, load_model, save_model

CFG = GravityConfig(backbone="resnet18", step=4, stride=16, head_channels=32, nms_box=5)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "good.safetensors"
    torch.manual_seed(0)
    save_model(path, GravityNet(CFG), CFG, {"threshold": 0.4})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["napari_gravity"])
    return path, load_file(str(path)), meta


def _variant(tmp_path, good, fname, tensors=None, changes=None, **kw):
    changes = {**(changes or {}), **kw}
    _, sd, meta = good
    meta = json.loads(json.dumps(meta))
    for k, v in changes.items():
        if k.startswith("cfg_"):
            meta["config"][k[4:]] = v
        else:
            meta[k] = v
    path = tmp_path / f"{fname}.safetensors"
    text = json.dumps(meta)  # NaN is written as the bare token NaN, as a hostile file would
    save_file(tensors or sd, str(path), metadata={"napari_gravity": text, "format": "pt"})
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "change, match",
    [
        ({"cfg_head_channels": 12000}, r"head_channels 12000\): .*shape\(s\) differ"),
        ({"cfg_head_channels": 10**9}, "cannot build the network|shape"),
        ({"cfg_head_channels": 1e9}, "head_channels: must be a positive integer"),
        ({"cfg_head_channels": 10**15}, "cannot build the network|shape"),
        ({"threshold": float("nan")}, r"'threshold': must be in \[0, 1\], got nan"),
        ({"threshold": float("inf")}, r"'threshold': must be in \[0, 1\]"),
        ({"threshold": 3.0}, r"'threshold': must be in \[0, 1\], got 3.0"),
        ({"threshold": "high"}, r"'threshold': must be in \[0, 1\]"),
        ({"cfg_threshold": float("nan")}, "threshold"),
        ({"cfg_nms_box": float("nan")}, "nms_box"),
        (
            {"fov_diameter_px": float("nan")},
            r"'fov_diameter_px': must be 100-20000 \(px\), got nan",
        ),
        ({"fov_diameter_px": 0.5}, r"'fov_diameter_px': must be 100-20000"),
        ({"fov_diameter_px": "1200"}, r"'fov_diameter_px': must be 100-20000"),
        ({"task": ["x"] * 10_000}, r"'task': must be a string, got \['x', .*\.\.\.$"),
        ({"format_version": "9" * 5000}, r"format version '9999.*\.\.\.;"),
    ],
)
def test_hostile_metadata_is_refused_before_building(tmp_path, good, change, match):
    path = _variant(tmp_path, good, "bad", **change)
    before = _peak_mb()
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path)
    assert str(path) in str(info.value) and len(str(info.value)) < 600
    assert _peak_mb() - before < 200  # no network of the hostile size was built


def test_non_finite_weights_are_refused(tmp_path, good):
    _, sd, _ = good
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        bad = {k: torch.full_like(v, value) if v.is_floating_point() else v for k, v in sd.items()}
        path = _variant(tmp_path, good, name, tensors=bad)
        with pytest.raises(ModelFileError, match=r"NaN/inf value\(s\)"):
            load_model(path)
    one = dict(sd)
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 4)
    one[key] = one[key].clone()
    one[key].view(-1)[3] = float("nan")
    with pytest.raises(ModelFileError, match=rf"{key}.* 1 NaN/inf"):
        load_model(_variant(tmp_path, good, "one", tensors=one))
    assert load_model(good[0]).config == CFG  # the good file still loads


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_is_refused_without_torch_advice(tmp_path, monkeypatch):
    from napari_gravity.core.model import load_state_dict_file
    from training.checkpoint import CheckpointError, load_checkpoint

    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError) as a:
        load_checkpoint(evil)
    with pytest.raises(ValueError) as b:
        load_state_dict_file(evil)
    for info in (a, b):
        text = str(info.value)
        assert str(evil) in text and "could run code" in text and "GLOBAL" in text
        assert "weights_only" not in text and "will likely succeed" not in text
    assert not (tmp_path / "PWNED").exists()


_json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = [f"cfg_{k}" for k in CFG.to_dict()] + [
    "threshold",
    "task",
    "name",
    "provenance",
    "metrics",
    "format_version",
    "config",
]


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=st.sampled_from(_KEYS), value=_json_value)
def test_fuzzed_metadata_gives_a_model_file_error_or_a_valid_model(tmp_path, good, key, value):
    path = _variant(tmp_path, good, "fuzz", changes={key: value})
    before = _peak_mb()
    try:
        loaded = load_model(path)
    except ModelFileError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 1000
    else:
        thr = loaded.metadata.get("threshold")
        assert thr is None or 0.0 <= thr <= 1.0
        assert loaded.config.head_channels == CFG.head_channels
    assert _peak_mb() - before < 300
