"""The trainer's JSON-lines event stream (``RUN_DIR/events.jsonl``) read by the GUI.

One JSON object per line, each with ``event`` and ``time`` (unix seconds):

- ``start`` {epochs, steps_per_epoch, run_dir, config, resumed_from_epoch, world_size, device}
- ``step`` {epoch, step, steps_per_epoch, loss, cls, reg, lr}
- ``epoch`` {epoch, train_loss, val_aufroc, lr, eta_s, val_sensitivity, images_per_s}
- ``best`` {epoch, val_aufroc, path}
- ``done`` {model_path, best_val_aufroc, threshold, stopped}
- ``error`` {message}
- ``aborted`` {message}: the run was aborted (``RUN_DIR/ABORT``, see training/abort.py);
  nothing was exported or registered

Epochs and steps are 1-based. Only rank 0 writes; the file is appended (``--resume`` continues it)
and flushed after every line so a reader polling the file sees complete lines.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from napari_gravity.events import read_events

__all__ = ["EVENT_KINDS", "EventLog", "read_events"]

EVENT_KINDS = ("start", "step", "epoch", "best", "done", "error", "aborted")


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


class EventLog:
    """Append events to ``path``; a no-op when ``enabled`` is False (non-zero DDP ranks)."""

    def __init__(self, path: str | Path | None, enabled: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled and self.path is not None
        self._fh = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        if event not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {event!r}; one of {EVENT_KINDS}")
        rec = {"event": event, "time": time.time(), **_clean(fields)}
        if self._fh is not None:
            self._fh.write(json.dumps(rec, allow_nan=False) + "\n")
            self._fh.flush()
        return rec

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
