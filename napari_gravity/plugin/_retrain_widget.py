"""The Retrain dock: fine-tune the current model on the reviewed images, in a subprocess.

The trainer runs as ``python -m training train CONFIG --init MODEL --out RUN_DIR --set ...``
(never imported here); a ``QTimer`` polls ``RUN_DIR/events.jsonl`` for the progress bar.
When the run is done the trainer has registered the new version; the dock loads it and
runs it on the next image of the queue (or the current one).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import _api
from . import review as rv
from ._session import DOCK_WIDTH, get_session, image_path_of, unwrap
from .runner import TrainingRun, train_command
from .sidecar import SidecarError, gt_csv_path, read_review, sidecar_path

POLL_MS = 250
DEFAULT_RADIUS = 3.0


@dataclass
class TrainingImage:
    path: Path
    points: np.ndarray
    radii: np.ndarray


def runs_dir() -> Path:
    root = os.environ.get("GRAVITY_RUNS") or Path.home() / ".napari-gravity" / "runs"
    return Path(root)


def reviewed_images(paths) -> list[TrainingImage]:
    """Images whose review is usable for training, with their lesion points.

    An image counts when its sidecar says ``done`` (no pending point left) or when its
    accepted points were promoted to a ground-truth CSV. Its lesions are the ground-truth
    CSV rows (not pending / rejected) plus the sidecar's accepted / added points.
    """
    out = []
    seen = set()
    for p in paths:
        p = Path(p)
        if str(p) in seen:
            continue
        seen.add(str(p))
        side, gt = sidecar_path(p), gt_csv_path(p)
        try:
            rev = read_review(side) if side.exists() else None
        except SidecarError:
            rev = None
        has_gt = gt.exists() and _api.is_points_csv(gt)
        if rev is None or not (rev.status == "done" or (has_gt and rev.status != "unreviewed")):
            continue
        pts = np.zeros((0, 2))
        radii = np.zeros(0)
        if has_gt:
            table = _api.read_points_csv(gt)
            keep = np.ones(len(table.points), bool)
            if "status" in table.features:
                keep = ~table.features["status"].isin(("pending", "rejected")).to_numpy()
            pts = table.points[keep]
            radii = np.where(np.isfinite(table.radii), table.radii, DEFAULT_RADIUS)[keep]
        lesion = rv.lesion_mask(rev.features)
        extra = rev.points[lesion]
        if len(pts) and len(extra):
            d2 = ((extra[:, None] - pts[None]) ** 2).sum(-1)
            extra = extra[d2.min(1) > DEFAULT_RADIUS**2]
        pts = np.concatenate([pts.reshape(-1, 2), extra])
        radii = np.concatenate([radii, np.full(len(extra), DEFAULT_RADIUS)])
        out.append(TrainingImage(p, pts, radii))
    return out


def build_dataset(images: list[TrainingImage], folder: Path) -> Path:
    """A folder dataset (``IMG.<ext>`` + ``IMG.csv``) of the reviewed images for the trainer."""
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        dest = folder / im.path.name
        try:
            os.symlink(im.path.resolve(), dest)
        except OSError:
            shutil.copy2(im.path, dest)
        _api.write_points_csv(gt_csv_path(dest), im.points, im.radii)
    return folder


class RetrainWidget(QWidget):
    """Fine-tune the current model on the corrections (see docs/plugin.md)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = get_session(napari_viewer)
        self.run: TrainingRun | None = None
        self.new_model: Path | None = None

        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        self.refresh_btn = QPushButton("Refresh")
        self.config_edit = QLineEdit("finetune")
        self.config_edit.setToolTip("A training config file or the name of a bundled one")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(10)
        self.name_edit = QLineEdit("finetuned")
        self.name_edit.setToolTip("Registry name of the new model version")
        self.launch_btn = QPushButton("Fine-tune on my corrections")
        self.launch_btn.setStyleSheet("font-weight: bold;")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("%p%")
        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(110)

        sbox = QGroupBox("Training set (reviewed images)")
        sl = QHBoxLayout(sbox)
        sl.addWidget(self.summary_label, 1)
        sl.addWidget(self.refresh_btn)
        form = QFormLayout()
        form.addRow("Config", self.config_edit)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Save as", self.name_edit)
        row = QHBoxLayout()
        row.addWidget(self.launch_btn, 1)
        row.addWidget(self.cancel_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(sbox)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.state_label)
        layout.addWidget(self.log)
        layout.addStretch(1)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.refresh_btn.clicked.connect(self.refresh)
        self.launch_btn.clicked.connect(self.launch)
        self.cancel_btn.clicked.connect(self.cancel)
        self.session.saved.connect(self._on_saved)
        self.setMaximumWidth(DOCK_WIDTH)
        self.session.widgets["retrain"] = self
        self.refresh()

    def _on_saved(self, _path: str) -> None:
        if self.isVisible():  # reading every sidecar of a big queue is not free
            self.refresh()

    # ------------------------------------------------------------------ training set
    def candidate_paths(self) -> list[str]:
        paths = list(self.session.queue)
        for layer in self.viewer.layers:
            p = image_path_of(layer)
            if p and layer.__class__.__name__ == "Image" and p not in paths:
                paths.append(p)
        return paths

    def training_images(self) -> list[TrainingImage]:
        for rev in list(self.session.reviews.values()):
            rev.flush()
        return reviewed_images(self.candidate_paths())

    def refresh(self) -> list[TrainingImage]:
        imgs = self.training_images()
        n_pts = sum(len(i.points) for i in imgs)
        names = ", ".join(i.path.name for i in imgs[:4]) + (" …" if len(imgs) > 4 else "")
        if imgs:
            self.summary_label.setText(
                f"<b>{len(imgs)}</b> image(s), <b>{n_pts}</b> lesion points<br>"
                f"<span style='color:#9aa'>{names}</span>"
            )
        else:
            self.summary_label.setText(
                "No reviewed image yet: finish a review (no pending points) or promote "
                "accepted points to ground truth."
            )
        return imgs

    # ------------------------------------------------------------------ run
    def launch(self) -> TrainingRun | None:
        if self.run is not None and self.run.state in ("running", "cancelling"):
            return self.run
        imgs = self.refresh()
        if not imgs:
            self.state_label.setText("Nothing to train on yet.")
            return None
        det = self.session.detector
        init = det.path if det is not None and det.kind == "model" else None
        if init is None:
            self.state_label.setText("Select a GravityNet model in the Detect dock first.")
            return None
        run_dir = runs_dir() / time.strftime("finetune-%Y%m%d-%H%M%S")
        n = 1
        while run_dir.exists():
            run_dir = run_dir.with_name(run_dir.name.split("~")[0] + f"~{n}")
            n += 1
        data_dir = build_dataset(imgs, run_dir / "data")
        cmd = train_command(
            self.config_edit.text().strip() or "finetune",
            run_dir,
            init=init,
            overrides={
                "data.root": data_dir,
                "data.format": "folder",
                "data.synthetic": "null",
                "data.splits": "null",
                "data.train_ids": "null",
                "data.val_ids": "null",
            },
        )
        cmd += ["--epochs", str(self.epochs_spin.value()), "--no-progress"]
        name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in self.name_edit.text())
        cmd += ["--register", name or "finetuned"]
        self.run = TrainingRun(cmd, run_dir)
        self.new_model = None
        try:
            self.run.start()
        except OSError as exc:
            self.state_label.setText(f"Could not start the trainer: {exc}")
            self.run = None
            return None
        self.progress.setValue(0)
        self.log.setPlainText("python " + " ".join(str(c) for c in cmd[1:]))
        self.state_label.setText(f"Training in {run_dir} …")
        self.launch_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.timer.start()
        return self.run

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.state_label.setText("Stopping (the trainer saves and exits)…")

    def poll(self) -> None:
        run = self.run
        if run is None:
            self.timer.stop()
            return
        for ev in run.poll():
            kind = ev.get("event")
            if kind == "epoch":
                auc = ev.get("val_aufroc")
                auc_txt = f", val AUFROC {100 * auc:.1f}%" if isinstance(auc, (int, float)) else ""
                self.log.appendPlainText(
                    f"epoch {ev.get('epoch')}: loss {ev.get('train_loss', float('nan')):.4f}{auc_txt}"
                )
            elif kind == "error":
                self.log.appendPlainText(f"error: {ev.get('message')}")
        self.progress.setValue(int(1000 * run.progress))
        if run.state in ("running", "cancelling"):
            return
        self.timer.stop()
        self.launch_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if run.state == "done":
            self._finish(run)
        elif run.state == "cancelled":
            self.state_label.setText("Cancelled: the current model is unchanged.")
        else:
            self.state_label.setText(
                f"<span style='color:#ff6060'>Training failed</span>: {run.error}"
            )
            self.log.appendPlainText(run.log_tail())

    def _finish(self, run: TrainingRun) -> None:
        done = next((e for e in reversed(run.events) if e.get("event") == "done"), {})
        label = done.get("registered")
        try:
            if label:
                path = _api.resolve_model(label)
            else:  # the trainer did not register it: do it here, never overwriting
                label, path = _api.register_model(run.model_path, self.name_edit.text())
            handle = _api.load_detector(path)
        except (ValueError, OSError) as exc:
            self.state_label.setText(f"Trained, but the new model could not be loaded: {exc}")
            return
        self.new_model = Path(path)
        self.session.set_detector(handle)
        self.state_label.setText(f"New model <b>{label}</b> registered and selected.")
        self.session.retrained.emit(str(path))
        self.run_on_next_image()

    def run_on_next_image(self) -> None:
        """Open the next image of the queue (if any) and run the new model on it."""
        review = self.session.widgets.get("review")
        detect = self.session.widgets.get("detect")
        if review is not None and self.session.queue:
            review.step_image(+1)
        if detect is not None:
            detect.refresh_images()
            detect.run_detection()
