"""Run the trainer as a subprocess and follow its event stream (``RUN_DIR/events.jsonl``).

Qt-free: the Retrain widget calls :meth:`TrainingRun.poll` from a ``QTimer``, so the
GUI never blocks. The trainer is started as ``python -m training train ...``; the
plugin never imports ``training``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from napari_gravity.events import parse_event_lines

#: the trainer aborts (exports and registers nothing) when this file appears in its run folder;
#: the same name as ``training.abort.ABORT_FILENAME`` (the plugin never imports ``training``)
ABORT_FILENAME = "ABORT"


def train_command(
    config: str | os.PathLike,
    run_dir: str | os.PathLike,
    init: str | os.PathLike | None = None,
    overrides: dict | None = None,
) -> list[str]:
    """The trainer's command line: ``python -m training train CONFIG --out RUN --init M --set k=v``."""
    cmd = [sys.executable, "-m", "training", "train", str(config), "--out", str(run_dir)]
    if init:
        cmd += ["--init", str(init)]
    for key, value in (overrides or {}).items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def child_env(env: dict | None = None) -> dict:
    """The trainer's environment: it runs in the caller's working directory (relative paths in
    its command mean what they mean here), and finds ``training`` where this process does: the
    folder holding the package goes first on ``PYTHONPATH`` unless it is already on
    ``sys.path`` (site-packages, an editable install's finder, ...)."""
    import importlib.util

    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    spec = importlib.util.find_spec("training")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).resolve().parents[1])
        on_path = {str(Path(p or os.getcwd()).resolve()) for p in sys.path if p != ""}
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in on_path and root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


BACKGROUND_NICE = 10


def lower_priority(pid: int | None = None) -> None:
    """Give a background process (or, with no pid, the calling thread on Linux) a lower CPU
    priority, so the GUI's event loop keeps its share on a busy machine."""
    try:
        if pid is None:
            import threading

            pid = threading.get_native_id()  # Linux: a thread is a schedulable task
        cur = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, max(cur, BACKGROUND_NICE))
    except (AttributeError, OSError):
        pass  # not POSIX, or not allowed: nothing to do


class TrainingRun:
    """One trainer subprocess; ``poll()`` returns the new events since the last call."""

    def __init__(self, cmd: list[str], run_dir: str | os.PathLike, env: dict | None = None):
        self.cmd = list(cmd)
        self.run_dir = Path(run_dir)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.events: list[dict] = []
        self.state = "idle"  # idle / running / cancelling / done / failed / cancelled
        #: after a cancel: "aborted" (the trainer confirmed: nothing registered), "killed" (it did
        #: not stop within the grace period), or "too_late" (it had already finished: ``state`` is
        #: "done" and the model WAS registered)
        self.cancel_outcome: str | None = None
        self.error: str | None = None
        self.model_path: str | None = None
        self.progress = 0.0
        self._offset = 0
        self._partial = ""
        self._cancel_time: float | None = None
        self._log = None

    @property
    def events_path(self) -> Path:
        return self.run_dir / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "trainer.log"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=child_env(self.env)
        )
        lower_priority(self.proc.pid)
        self.state = "running"

    @property
    def abort_path(self) -> Path:
        return self.run_dir / ABORT_FILENAME

    def cancel(self, grace_s: float = 60.0) -> None:
        """Abort the run: the trainer sees ``RUN_DIR/ABORT`` after its current step and exits
        without exporting or registering anything; killed after ``grace_s`` if it does not.
        (``stop()`` is the CLI's Ctrl-C: save a checkpoint, export and register.)"""
        if self.proc is not None and self.proc.poll() is None:
            self.abort_path.touch()
            self._cancel_time = time.monotonic() + grace_s
            self.state = "cancelling"

    def stop(self) -> None:
        """SIGTERM: the trainer saves, exports the best model so far and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def _read_events(self) -> list[dict]:
        try:
            with open(self.events_path, encoding="utf-8") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except FileNotFoundError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next poll
        return parse_event_lines(lines)

    def _apply(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "start":
            self._epochs = max(int(ev.get("epochs", 1)), 1)
        elif kind == "step":
            epochs = getattr(self, "_epochs", 1)
            spe = max(int(ev.get("steps_per_epoch", 1)), 1)
            epoch = int(ev.get("epoch", 1))
            step = int(ev.get("step", 0))
            # epochs are 1-based in the stream; tolerate 0-based too
            e0 = epoch - 1 if epoch >= 1 else epoch
            self.progress = min(1.0, (e0 + step / spe) / epochs)
        elif kind == "epoch":
            epochs = getattr(self, "_epochs", 1)
            epoch = int(ev.get("epoch", 1))
            self.progress = min(1.0, max(self.progress, (epoch if epoch >= 1 else 1) / epochs))
        elif kind == "done":
            self.model_path = ev.get("model_path")
            self.progress = 1.0
        elif kind == "error":
            self.error = str(ev.get("message", "trainer error"))

    def poll(self) -> list[dict]:
        """New events; updates ``state``, ``progress``, ``model_path`` and ``error``."""
        if self.proc is None:
            return []
        new = self._read_events()
        for ev in new:
            self._apply(ev)
        self.events.extend(new)
        rc = self.proc.poll()
        if rc is None:
            if self._cancel_time is not None and time.monotonic() > self._cancel_time:
                self.proc.kill()
                self._killed = True
            return new
        if self.state in ("running", "cancelling"):
            new_tail = self._read_events()  # anything written just before exit
            for ev in new_tail:
                self._apply(ev)
            self.events.extend(new_tail)
            new += new_tail
            if self._log:
                self._log.close()
            kinds = {e.get("event") for e in self.events}
            if self.state == "cancelling" and "done" in kinds and self.model_path:
                self.state, self.cancel_outcome = "done", "too_late"
            elif self.state == "cancelling":
                self.state = "cancelled"
                self.cancel_outcome = "aborted" if "aborted" in kinds else "killed"
            elif rc == 0 and self.error is None and self.model_path:
                self.state = "done"
            else:
                self.state = "failed"
                if self.error is None:
                    self.error = f"trainer exited with code {rc}: {self.log_tail()}"
        return new

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait(self, timeout: float) -> str:
        """Block until the run ends (tests and the CLI only); returns the final state."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if self.state not in ("running", "cancelling"):
                return self.state
            time.sleep(0.1)
        return self.state
