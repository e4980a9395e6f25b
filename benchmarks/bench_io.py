"""What every benchmark script writes the same way: the machine line and the result JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path


def machine(threads: int = 2) -> str:
    """The host and CPU a figure was measured on, and the torch threads it used."""
    return f"{platform.node()} {platform.processor() or platform.machine()}, {threads} threads"


def save_json(out: dict, path: str | Path) -> None:
    """Write a benchmark's result (its folder made if needed) and say where."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))
    print("wrote", path)
