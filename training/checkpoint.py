"""Resume checkpoints: atomic writes (temp file + rename), safe loads (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from napari_gravity.fileio import atomic_write


class CheckpointError(ValueError):
    """A resume checkpoint is missing or unreadable (message names the file)."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a resume checkpoint (state dicts, numbers, strings, tensors only) atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a resume checkpoint with ``weights_only=True`` (no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted / foreign file
        from napari_gravity.fileio import torch_load_error

        raise CheckpointError(f"{path}: cannot read checkpoint: {torch_load_error(exc)}") from None
