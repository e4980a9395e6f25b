"""The Retrain dock: fine-tune the current model on the reviewed images, in a subprocess.

The trainer runs as ``python -m training train CONFIG --init MODEL --out RUN_DIR --set ...``
(never imported here); a ``QTimer`` polls ``RUN_DIR/events.jsonl`` for the progress bar.
When the run is done the trainer has registered the new version; the dock loads it and
runs it on the next image of the queue (or the current one).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QLineEdit, QPlainTextEdit, QSpinBox

from napari_gravity.core.model_io import read_model_metadata

from . import _ui
from ._session import Dock, image_path_of
from .datasets import (
    MIN_HOLDOUT_IMAGES,
    TrainingImage,
    compare_models,
    finetune_run,
    reviewed_images,
)
from .runner import TrainingRun

POLL_MS = 250
DEFAULT_RADIUS = 3.0


class RetrainWidget(Dock):
    """Fine-tune the current model on the corrections (see docs/plugin.md)."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.run: TrainingRun | None = None
        self.new_model: Path | None = None
        self.parent_model: str | None = None
        self.new_label: str | None = None
        self.held_out: list[TrainingImage] = []
        self.comparison: dict | None = None

        self.summary_label = _ui.label()
        self.config_edit = QLineEdit("finetune")
        self.config_edit.setToolTip("A training config file or the name of a bundled one")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(10)
        self.name_edit = QLineEdit("finetuned")
        self.name_edit.setToolTip("Registry name of the new model version")
        self.launch_btn = _ui.button("Fine-tune on my corrections", self.launch, bold=True)
        self.cancel_btn = _ui.button("Cancel", self.cancel, enabled=False)
        self.progress = _ui.ProgressBar()
        self.progress.setRange(0, 1000)
        self.state_label, self.val_label, self.compare_label = (_ui.label() for _ in range(3))
        self.use_btn = _ui.button("Use new model", self.use_new_model, bold=True)
        self.keep_btn = _ui.button("Keep current", self.keep_current)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(110)
        _ui.stack(
            self,
            _ui.group(
                "Training set (reviewed images)",
                [self.summary_label, _ui.button("Refresh", self.refresh)],
            ),
            _ui.group(
                "Fine-tune",
                ("Config", self.config_edit),
                ("Epochs", self.epochs_spin),
                ("Save as", self.name_edit),
                [self.launch_btn, self.cancel_btn],
                form=True,
            ),
            self.progress,
            self.state_label,
            self.val_label,
            self.compare_label,
            [self.use_btn, self.keep_btn],
            self.log,
        )
        self.timer = _ui.timer(POLL_MS, self.poll, parent=self)
        self._set_choice_visible(False)
        self.session.saved.connect(self._on_saved)
        self.refresh()

    def _on_saved(self, _path: str) -> None:
        if self.isVisible():  # reading every sidecar of a big queue is not free
            self.refresh()

    # ------------------------------------------------------------------ training set
    def candidate_paths(self) -> list[str]:
        paths = list(self.session.queue)
        paths += [image_path_of(im) for im in self.session.images() if image_path_of(im)]
        return list(dict.fromkeys(paths))

    def training_images(self) -> list[TrainingImage]:
        self.session.flush_reviews()
        return reviewed_images(self.candidate_paths())

    def refresh(self) -> list[TrainingImage]:
        imgs = self.training_images()
        n_pts = sum(len(i.points) for i in imgs)
        names = ", ".join(i.path.name for i in imgs[:4]) + (" …" if len(imgs) > 4 else "")
        self.summary_label.setText(
            f"<b>{len(imgs)}</b> image(s), <b>{n_pts}</b> lesion points<br>"
            f"<span style='color:#9aa'>{names}</span>"
            if imgs
            else "No reviewed image yet: finish a review (no pending points) or promote "
            "accepted points to ground truth."
        )
        return imgs

    # ------------------------------------------------------------------ run
    def init_model(self) -> str | None:
        """The model to fine-tune: the current detector, else the Detect dock's selection."""
        if self.session.detector is not None and self.session.detector.path:
            return self.session.detector.path
        kind, ref = self.session.selected_model or ("", None)
        return ref if kind == "model" else None

    def launch(self) -> TrainingRun | None:
        if self.run is not None and self.run.state in ("running", "cancelling"):
            return self.run
        imgs = self.refresh()
        if not imgs:
            self.state_label.setText("Nothing to train on yet.")
            return None
        init = self.init_model()
        if init is None:
            self.state_label.setText("Select a GravityNet model in the Detect dock first.")
            return None
        self.parent_model = init
        parent_thr = read_model_metadata(init, strict=False).get("threshold")
        how = (self.config_edit.text().strip(), self.epochs_spin.value(), self.name_edit.text())
        cmd, run_dir, held_out = finetune_run(imgs, init, *how, parent_thr)
        self.held_out, self.run = held_out, TrainingRun(cmd, run_dir)
        self.new_model = self.new_label = self.comparison = None
        self._set_choice_visible(False)
        try:
            self.run.start()
        except OSError as exc:
            self.state_label.setText(f"Could not start the trainer: {exc}")
            self.run = None
            return None
        self.progress.setValue(0)
        self.log.setPlainText("python " + " ".join(str(c) for c in cmd[1:]))
        if held_out:
            self.val_label.setText(
                f"Validation: {len(held_out)} held-out reviewed image(s) "
                f"({', '.join(i.path.name for i in held_out[:3])}"
                f"{' …' if len(held_out) > 3 else ''}), never trained on."
            )
        else:
            thr = f" γ {float(parent_thr):.2f}" if isinstance(parent_thr, (int, float)) else ""
            self.val_label.setText(
                f"<span style='color:#ffb000'>No independent validation</span>: with "
                f"{len(imgs)} reviewed image(s) all are used for training (a held-out set needs "
                f"{MIN_HOLDOUT_IMAGES}). The new model keeps the current model's operating "
                f"threshold{thr}; no validation figure is shown."
            )
        self.state_label.setText(f"Training in {run_dir} …")
        self.launch_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.timer.start()
        return self.run

    def cancel(self) -> None:
        if self.run is not None and self.run.state == "running":
            self.run.cancel()
            self.state_label.setText("Aborting: the trainer stops after its current step…")

    def poll(self) -> None:
        run = self.run
        if run is None:
            self.timer.stop()
            return
        for ev in run.poll():
            kind = ev.get("event")
            if kind == "epoch":
                auc = ev.get("val_aufroc")
                auc_txt = ""
                if self.held_out and isinstance(auc, (int, float)):
                    auc_txt = f", held-out AUFROC {100 * auc:.1f}%"
                loss = ev.get("train_loss")
                loss = float("nan") if loss is None else float(loss)
                self.log.appendPlainText(f"epoch {ev.get('epoch')}: loss {loss:.4f}{auc_txt}")
            elif kind in ("error", "aborted"):
                self.log.appendPlainText(f"{kind}: {ev.get('message')}")
        if run.state == "running":
            self.progress.setValue(int(1000 * run.progress))
        if run.state in ("running", "cancelling"):
            return
        self.timer.stop()
        self.launch_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if run.state == "done":
            self.progress.setValue(1000)
            self._finish(run)
        elif run.state == "cancelled":
            how = (
                "the trainer stopped"
                if run.cancel_outcome == "aborted"
                else "the trainer did not stop in time and was killed"
            )
            self.state_label.setText(
                f"Cancelled at {100 * run.progress:.0f}%: {how}; no model was registered and "
                "your current model is unchanged."
            )
        else:
            self.state_label.setText(
                f"<span style='color:#ff6060'>Training failed</span>: {run.error}"
            )
            self.log.appendPlainText(run.log_tail())

    def _finish(self, run: TrainingRun) -> None:
        from napari_gravity.core import registry

        done = next((e for e in reversed(run.events) if e.get("event") == "done"), {})
        label = done.get("registered")
        try:
            if label:
                path = registry.resolve_model(label)
            else:  # the trainer did not register it: do it here, never overwriting
                entry = registry.register_model(run.model_path, self.name_edit.text())
                label, path = entry.label, entry.path
        except (ValueError, OSError) as exc:
            self.state_label.setText(f"Trained, but the new model could not be found: {exc}")
            return
        self.new_model = Path(path)
        self.new_label = label
        if run.cancel_outcome == "too_late":
            self.state_label.setText(
                f"Cancel came too late: the run had already finished and registered "
                f"<b>{label}</b>. Your current model stays selected."
            )
            return
        self.state_label.setText(
            f"New model <b>{label}</b> registered (not in use yet): compare, then choose."
        )
        self._set_choice_visible(True)
        if self.held_out:
            self.compare()
        else:
            self.compare_label.setText(
                "No held-out images: nothing tells whether the new model is better than the "
                "current one. Try it on an image you know before relying on it."
            )

    def compare(self) -> None:
        """Current vs new model on the held-out images, in a worker thread."""
        from napari.qt.threading import create_worker

        images = [(str(i.path), i.points, i.radii) for i in self.held_out]
        models = {"current": self.parent_model, "new": str(self.new_model)}
        self.compare_label.setText(f"Comparing on {len(images)} held-out image(s)…")
        self._compare_worker = create_worker(
            compare_models, models, images, _progress={"desc": "Comparing models"}
        )
        self._compare_worker.returned.connect(self._on_compared)
        self._compare_worker.errored.connect(
            lambda exc: self.compare_label.setText(f"Comparison failed: {exc}")
        )
        self._compare_worker.start()

    def _on_compared(self, res: dict) -> None:
        self.comparison = res
        cur, new = res["current"], res["new"]
        rows = []
        for name, r in (("current", cur), (f"new ({self.new_label})", new)):
            rows.append(
                f"<tr><td>{name}</td><td>{100 * r['aufroc']:.1f}%</td>"
                f"<td>{100 * r['sensitivity']:.0f}% · {r['fp_per_image']:.1f} FP/img "
                f"(γ {r['threshold']:.2f})</td></tr>"
            )
        self.compare_label.setText(
            f"Same {cur['n_images']} held-out image(s), {cur['n_lesions']} lesions:"
            f"<table><tr><th></th><th>AUFROC<sub>{cur['max_fppi']:g}</sub></th>"
            f"<th>at its γ</th></tr>{''.join(rows)}</table>"
        )

    def _set_choice_visible(self, on: bool) -> None:
        for w in (self.use_btn, self.keep_btn, self.compare_label):
            w.setVisible(on)
        if not on:
            self.compare_label.setText("")

    def use_new_model(self) -> None:
        """Switch to the new model: select it in Detect and run it on the next image."""
        if self.new_model is None:
            return
        self._set_choice_visible(False)
        self.state_label.setText(f"Using <b>{self.new_label}</b>.")
        self.run_on_next_image(str(self.new_model))

    def keep_current(self) -> None:
        self._set_choice_visible(False)
        self.state_label.setText(
            f"Kept the current model; <b>{self.new_label}</b> stays in the model list."
        )

    def run_on_next_image(self, model_path: str) -> None:
        """Open the next image of the queue (if any) and run ``model_path`` on it."""
        if self.session.queue:
            self.session.step_image.emit(+1)
        self.session.use_model.emit(model_path)
