"""Atomic writers under ``kill -9`` (issue 13): no orphan temp file survives the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from napari_gravity.fileio import atomic_write_text, remove_orphan_temps

_WRITER = r"""
import sys, time
from pathlib import Path
from napari_gravity.fileio import atomic_write
def slow(tmp):
    Path(tmp).write_bytes(b"")          # the 0-byte temp file seen after a kill
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], slow)
"""


def _killed_writer(target: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_during_a_sidecar_write_leaves_no_temp_after_the_next_write(tmp_path):
    sidecar = tmp_path / "IMG.review.json"
    atomic_write_text(sidecar, '{"v": 0}')
    for i in range(3):  # a kill loop: every killed write leaves one orphan ...
        _killed_writer(sidecar)
        orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(orphans) == 1 and orphans[0].stat().st_size == 0
        assert sidecar.read_text() == f'{{"v": {i}}}'  # ... and the target stays intact
        atomic_write_text(sidecar, f'{{"v": {i + 1}}}')  # ... which the next write removes
        assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG.review.json"]


def test_temps_of_live_writers_and_other_files_are_kept(tmp_path):
    target = tmp_path / "a.csv"
    live = tmp_path / f".a.csv.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / ".b.csv.999999999.0123abcd.tmp"
    odd = tmp_path / ".a.csv.notapid.tmp"
    for p in (live, other, odd):
        p.write_text("x")
    dead = tmp_path / f".a.csv.{_dead_pid()}.89abcdef.tmp"
    dead.write_text("")
    assert remove_orphan_temps(target) == [dead]
    assert live.exists() and other.exists() and odd.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.05)
    return proc.pid
