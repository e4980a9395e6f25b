"""Atomic file writes: one home for "temp file beside the target, then rename over it".

A reader (or a crash) never sees a half-written file: the data go to a uniquely named temporary
file in the target's folder, which is then renamed over the target with ``os.replace``. The
temporary file never survives an exception; after a hard kill (``kill -9``, power loss) the next
write of the same target removes the orphan (its name holds the writer's pid, which must be gone).
Files get ordinary permissions (the process umask).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask once (setting it back at once)
os.umask(_UMASK)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, fsync: bool = False
) -> Path:
    """Call ``write(tmp)`` for a temporary path beside ``path``, then rename it over ``path``.
    With ``fsync`` the data reach the disk before the rename.

    ``tmp`` has the target's own name inside a private hidden folder ``.NAME.<pid>.<hex>.tmp/``
    (so a writer that picks a format from the extension sees the right one, and any scratch file
    a library makes beside ``tmp`` — safetensors does — is removed with that folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temps(path)
    tmpdir = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmpdir.mkdir()
    tmp = tmpdir / path.name
    try:
        write(tmp)
        if tmp.is_file():  # a library may have written through its own 0600 temp file
            os.chmod(tmp, 0o666 & ~_UMASK)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def remove_orphan_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.NAME.<pid>.<hex>.tmp`` folders (or files, from older versions) beside ``path``
    whose writer process is gone (left by a killed writer). Returns the removed paths."""
    path = Path(path)
    removed = []
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        parts = name[len(prefix) : -len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 8:
            continue
        if _pid_alive(int(parts[0])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, fsync=fsync)


def torch_load_error(exc: BaseException) -> str:
    """The message of a failed ``torch.load(weights_only=True)`` without torch's advice to re-run
    with ``weights_only=False`` (which would execute code from an untrusted file)."""
    text = str(exc)
    if "weights_only" not in text and "Weights only load failed" not in text:
        return text
    parts = [p.strip() for p in text.replace("WeightsUnpickler error:", "\n").splitlines()]
    keep = [
        p
        for p in parts
        if p
        and "weights_only" not in p
        and not p.startswith(("Weights only load failed", "Check the documentation"))
    ]
    detail = " ".join(" ".join(keep).split())[:200]
    return (
        "not a plain tensor file: the safe loader refused it (only tensors, numbers and strings "
        "are loaded, never Python objects that could run code)" + (f": {detail}" if detail else "")
    )
