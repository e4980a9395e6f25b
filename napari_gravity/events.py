"""Reading the trainer's JSON-lines event stream (``RUN_DIR/events.jsonl``).

The schema and the writer live in ``training.events``; this reader sits in the core so that the
trainer and the napari plugin (which never imports ``training``) parse the stream the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def parse_event_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The events in ``lines``; blank lines and lines that are not complete JSON are skipped."""
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events of a run (a partial last line is skipped)."""
    return parse_event_lines(Path(path).read_text(encoding="utf-8").splitlines())
