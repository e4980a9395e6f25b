"""Resume checkpoints: atomic writes (temp file + rename), safe loads (``weights_only=True``),
and the random-number state a resumed run needs to continue exactly where it stopped."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
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


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, NumPy, Python ``random``) in types that load
    with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (global state)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (a CUDA state is skipped when the device count
    differs)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))  # noqa: NPY002 (global state)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
