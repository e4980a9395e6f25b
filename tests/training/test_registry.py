"""Model registry: versions are added, never overwritten; names resolve to files."""

from __future__ import annotations

import hashlib

import pytest

from napari_gravity.core import registry


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_register_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAVITY_MODELS", str(tmp_path / "reg"))
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    a.write_bytes(b"first model")
    b.write_bytes(b"second model")
    e1 = registry.register_model(a, "mc")
    e2 = registry.register_model(b, "mc")
    assert (e1.version, e2.version) == (1, 2)
    assert e1.path.read_bytes() == b"first model" and e2.path.read_bytes() == b"second model"
    assert registry.resolve_model("mc") == e2.path
    assert registry.resolve_model("mc:v1") == e1.path
    assert registry.resolve_model("mc:1") == e1.path
    labels = [e.label for e in registry.list_models(include_bundled=False)]
    assert labels == ["mc:v1", "mc:v2"]
    # a version file that appears concurrently is skipped, not overwritten
    (tmp_path / "reg" / "mc" / "v003.safetensors").write_bytes(b"someone else")
    e4 = registry.register_model(a, "mc")
    assert e4.version == 4
    assert (tmp_path / "reg" / "mc" / "v003.safetensors").read_bytes() == b"someone else"
    with pytest.raises(registry.RegistryError, match="mc:v9"):
        registry.resolve_model("mc:v9")
    with pytest.raises(registry.RegistryError, match="nope"):
        registry.resolve_model("nope")
    with pytest.raises(registry.RegistryError, match="bad name"):
        registry.register_model(a, "bad name")


def test_models_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAVITY_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert registry.models_dir() == tmp_path / ".napari-gravity" / "models"
