"""Atomic writers under ``kill -9`` (issue 13): no orphan temp file survives the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from napari_gravity.fileio import atomic_write_text, remove_orphan_temps

_WRITER = r"""
import sys, time
from pathlib import Path

import numpy as np
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
        assert len(orphans) == 1  # the killed writer's private folder, with its 0-byte file
        assert [(q.name, q.stat().st_size) for q in orphans[0].iterdir()] == [(sidecar.name, 0)]
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
    dead.write_text("")  # an older-style temp file
    dead_dir = tmp_path / f".a.csv.{_dead_pid()}.fedcba98.tmp"
    dead_dir.mkdir()
    (dead_dir / "a.csv").write_text("half")
    (dead_dir / ".tmpXyZ123").write_text("a library's own scratch file")
    assert sorted(remove_orphan_temps(target)) == sorted([dead, dead_dir])
    assert live.exists() and other.exists() and odd.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.05)
    return proc.pid


_LOOP = r"""
import sys
from pathlib import Path

import numpy as np
kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "model":
    import torch
    from napari_gravity.core import GravityConfig, GravityNet, save_model
    cfg = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)
    net = GravityNet(cfg)
    write = lambda i: save_model(target, net, cfg, {"threshold": 0.5, "note": str(i)})
else:
    import numpy as np
    from napari_gravity.data.annotations import write_points_csv
    pts = np.random.default_rng(0).uniform(0, 100, (2000, 2))
    write = lambda i: write_points_csv(target, pts + i, np.full(len(pts), 2.0))
write(0)
print("ready", flush=True)
i = 1
while True:
    write(i)
    i += 1
"""


def _kill_loop(kind: str, target: Path, rounds: int, check) -> None:
    rng = np.random.default_rng(1)
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, kind, str(target)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))  # somewhere inside a write (or between two)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        check(target)  # the target is always a complete, loadable file
    # the sweep every atomic write starts with clears whatever temp files the kills left
    remove_orphan_temps(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_kill_9_loop_on_the_points_csv_writer(tmp_path):
    from napari_gravity.data.annotations import read_points_csv

    def check(p):
        assert len(read_points_csv(p)) == 2000

    _kill_loop("csv", tmp_path / "IMG.csv", 8, check)


def test_kill_9_loop_on_the_model_writer(tmp_path):
    from napari_gravity.core import load_model

    def check(p):
        assert load_model(p).metadata["threshold"] == 0.5

    _kill_loop("model", tmp_path / "m.safetensors", 2, check)
