"""Abort a run without exporting or registering anything (the GUI's Cancel).

Ctrl-C / SIGTERM mean "save and stop": the trainer writes a checkpoint and still exports the best
model so far. An *abort* means "throw it away": whoever started the run creates the flag file
``RUN_DIR/ABORT`` (the napari plugin's Retrain dock does, without importing ``training``); the loop
checks it after every step and once more before exporting, then raises :class:`TrainingAborted`.
The run ends with an ``aborted`` event and no ``model.safetensors``, no registry entry.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the flag file's name inside the run folder (the plugin's runner writes the same name)
ABORT_FILENAME = "ABORT"


class TrainingAborted(ValueError):
    """The run was aborted on request; nothing was exported or registered."""


def abort_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / ABORT_FILENAME


def request_abort(run_dir: str | os.PathLike[str]) -> Path:
    """Ask the trainer working in ``run_dir`` to abort (creates the flag file)."""
    p = abort_path(run_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.touch()
    return p


def abort_requested(run_dir: str | os.PathLike[str]) -> bool:
    return abort_path(run_dir).exists()


def check_abort(run_dir: str | os.PathLike[str], where: str) -> None:
    """Raise :class:`TrainingAborted` when an abort was requested for ``run_dir``."""
    if abort_requested(run_dir):
        raise TrainingAborted(
            f"{abort_path(run_dir)}: aborted on request ({where}); "
            "no model exported, nothing registered"
        )
