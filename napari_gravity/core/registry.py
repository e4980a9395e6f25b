"""Model registry: versioned model files in a folder, plus the bundled default model.

Layout: ``ROOT/NAME/vNNN.safetensors`` (``ROOT`` = ``$GRAVITY_MODELS`` or
``~/.napari-gravity/models``). :func:`register_model` copies a model file in as the next version
of ``NAME`` and never overwrites an existing file (versions are claimed with an exclusive create,
so two concurrent registrations get two versions). The bundled default model lives in
``napari_gravity/models/`` and is listed as ``default`` (read-only).

A model is named on the command line or in the GUI by a path, ``NAME`` (latest version),
``NAME:vN`` or ``NAME:N``, or ``default`` — see :func:`resolve_model`.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_gravity.fileio import atomic_write

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_NAME = "default_mc"
_VERSION_RE = re.compile(r"^v(\d+)\.safetensors$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RegistryError(ValueError):
    """A registry operation failed (message names the file or model)."""


@dataclass
class ModelEntry:
    """One registered (or bundled) model file."""

    name: str
    version: int
    path: Path
    bundled: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.bundled else f"{self.name}:v{self.version}"

    def summary(self) -> dict[str, Any]:
        md = self.metadata or {}
        prov = md.get("provenance") or {}
        return {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "path": str(self.path),
            "bundled": self.bundled,
            "threshold": md.get("threshold"),
            "date": prov.get("date"),
            "parent": prov.get("parent"),
            "val_aufroc": (md.get("metrics") or {}).get("val_aufroc"),
        }


def models_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The registry folder: ``root``, else ``$GRAVITY_MODELS``, else ``~/.napari-gravity/models``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("GRAVITY_MODELS")
    if env:
        return Path(env)
    return Path.home() / ".napari-gravity" / "models"


def default_model_path(task: str = "mc") -> Path | None:
    """The bundled default model of ``task`` (``mc``: ``default_mc``, ``ma``: ``default_ma``),
    or None if it is not installed."""
    from .task import DEFAULT_MODELS

    if task not in DEFAULT_MODELS:
        raise RegistryError(f"unknown task {task!r} (use {', '.join(DEFAULT_MODELS)})")
    p = BUNDLED_DIR / f"{DEFAULT_MODELS[task]}.safetensors"
    return p if p.is_file() else None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A model file's metadata, ``{}`` when unreadable (so listing never fails): a thin alias of
    ``model_io.read_model_metadata(path, strict=False)``, the one metadata reader."""
    from .model_io import read_model_metadata

    return read_model_metadata(path, strict=False)


def _versions(folder: Path) -> list[tuple[int, Path]]:
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _VERSION_RE.match(p.name)
            if m and p.is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def list_models(
    root: str | os.PathLike[str] | None = None,
    include_bundled: bool = True,
    with_metadata: bool = True,
) -> list[ModelEntry]:
    """Every registered version (sorted by name, version) and, first, the bundled models."""
    entries: list[ModelEntry] = []
    if include_bundled and BUNDLED_DIR.is_dir():
        for p in sorted(BUNDLED_DIR.glob("*.safetensors")):
            md = read_metadata(p) if with_metadata else {}
            entries.append(ModelEntry(p.stem, 0, p, bundled=True, metadata=md))
    base = models_dir(root)
    if base.is_dir():
        for folder in sorted(q for q in base.iterdir() if q.is_dir()):
            for version, p in _versions(folder):
                md = read_metadata(p) if with_metadata else {}
                entries.append(ModelEntry(folder.name, version, p, metadata=md))
    return entries


def latest_version(name: str, root: str | os.PathLike[str] | None = None) -> ModelEntry | None:
    vs = _versions(models_dir(root) / name)
    if not vs:
        return None
    version, p = vs[-1]
    return ModelEntry(name, version, p, metadata=read_metadata(p))


def register_model(
    path: str | os.PathLike[str],
    name: str,
    root: str | os.PathLike[str] | None = None,
) -> ModelEntry:
    """Copy a model file into the registry as the next version of ``name``.

    Never overwrites: the new version's file is claimed with an exclusive create (``O_EXCL``),
    then filled from a temporary file and renamed over the (empty) claim. Returns the new entry.
    """
    src = Path(path)
    if not src.is_file():
        raise RegistryError(f"cannot register {src}: no such model file")
    if not _NAME_RE.match(name):
        raise RegistryError(
            f"model name {name!r}: use letters, digits, '_', '-', '.', starting with a letter/digit"
        )
    folder = models_dir(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        vs = _versions(folder)
        version = (vs[-1][0] + 1) if vs else 1
        dest = folder / f"v{version:03d}.safetensors"
        try:
            fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another process claimed it: try the next number
        os.close(fd)
        try:
            atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
        except BaseException:
            dest.unlink(missing_ok=True)  # give the claimed number back
            raise
        return ModelEntry(name, version, dest, metadata=read_metadata(dest))
    raise RegistryError(f"could not claim a new version of {name!r} in {folder}")


def resolve_model(spec: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """A model file from a path, ``default``, ``NAME``, ``NAME:vN`` or ``NAME:N``."""
    text = str(spec)
    p = Path(text)
    if p.is_file():
        return p
    if text == "default":
        d = default_model_path()
        if d is None:
            raise RegistryError("the bundled default model is not installed")
        return d
    bundled = BUNDLED_DIR / f"{text}.safetensors"
    if bundled.is_file():
        return bundled
    name, _, ver = text.partition(":")
    if _NAME_RE.match(name) and not p.suffix == ".safetensors":
        if ver:
            try:
                v = int(ver.lstrip("vV"))
            except ValueError:
                raise RegistryError(f"model {text!r}: bad version {ver!r}") from None
            cand = models_dir(root) / name / f"v{v:03d}.safetensors"
            if cand.is_file():
                return cand
            raise RegistryError(f"model {text!r}: no version {v} in {models_dir(root) / name}")
        entry = latest_version(name, root)
        if entry is not None:
            return entry.path
    raise RegistryError(
        f"model {text!r}: not a file, not 'default', and not a registered model in {models_dir(root)}"
    )
