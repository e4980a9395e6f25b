"""The Detect dock: pick a model, run it in a worker, tune γ / NMS live from the cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from . import _api
from ._session import DOCK_WIDTH, get_session, image_path_of, unwrap
from .runner import lower_priority

SLIDER_STEPS = 1000


def _describe(meta: dict, path: str | None) -> str:
    cfg = meta.get("config") or {}
    prov = meta.get("provenance") or {}
    bits = []
    if cfg:
        bits.append(f"{cfg.get('backbone', '?')}, step {cfg.get('step', '?')}")
    if prov.get("date"):
        bits.append(f"trained {str(prov['date'])[:16]}")
    if prov.get("epochs") is not None:
        bits.append(f"{prov['epochs']} epochs")
    parent = prov.get("parent")
    if isinstance(parent, dict):
        parent = parent.get("path")
    if parent:
        bits.append(f"from {Path(str(parent)).name}")
    if meta.get("threshold") is not None:
        bits.append(f"γ {float(meta['threshold']):.2f}")
    if path:
        bits.append(Path(path).name)
    return " · ".join(bits) or "no metadata"


class DetectWidget(QWidget):
    """Detect lesions in the selected image (see docs/plugin.md)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = get_session(napari_viewer)
        self.setMaximumWidth(DOCK_WIDTH)
        self.session.widgets["detect"] = self
        self.worker = None
        self.busy = False
        self.last_update_ms: float | None = None
        self._cancelled = False
        self._overlay = None
        self._tick = QTimer(self)
        self._tick.setInterval(250)
        self._tick.timeout.connect(self._on_tick)

        # --- model
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Models in the registry folder; classical detectors stand in")
        self.open_btn = QPushButton("Open…")
        self.open_btn.setToolTip("Load a model file (.safetensors)")
        self.device_label = QLabel(f"Device: {_api.device_name()}")
        self.choice_label = QLabel("")
        self.choice_label.setWordWrap(True)
        self.user_chose_model = False  # else the model follows the image's task (mc / ma)
        self.meta_label = QLabel("")
        self.meta_label.setWordWrap(True)
        self.meta_label.setStyleSheet("color: #9aa;")
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_combo, 1)
        mrow.addWidget(self.open_btn)
        mbox = QGroupBox("Model")
        ml = QVBoxLayout(mbox)
        ml.addLayout(mrow)
        ml.addWidget(self.choice_label)
        ml.addWidget(self.meta_label)
        ml.addWidget(self.device_label)

        # --- run
        self.image_combo = QComboBox()
        self.detect_btn = QPushButton("Detect")
        self.detect_btn.setStyleSheet("font-weight: bold;")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.run_label = QLabel("")
        self.run_label.setWordWrap(True)
        rbox = QGroupBox("Run")
        rl = QFormLayout(rbox)
        rl.addRow("Image", self.image_combo)
        brow = QHBoxLayout()
        brow.addWidget(self.detect_btn, 1)
        brow.addWidget(self.cancel_btn)
        rl.addRow(brow)
        rl.addRow(self.progress)
        rl.addRow(self.run_label)

        # --- post-processing
        self.thr_slider = QSlider(Qt.Orientation.Horizontal)
        self.thr_slider.setRange(0, SLIDER_STEPS)
        self.thr_label = QLabel("0.50")
        self.thr_label.setMinimumWidth(36)
        self.box_spin = QDoubleSpinBox()
        self.box_spin.setRange(1.0, 64.0)
        self.box_spin.setSingleStep(1.0)
        self.box_spin.setDecimals(0)
        self.box_spin.setSuffix(" px")
        self.iou_spin = QDoubleSpinBox()
        self.iou_spin.setRange(0.0, 1.0)
        self.iou_spin.setSingleStep(0.05)
        self.overlay_check = QCheckBox("Show moved gravity points")
        self.latency_label = QLabel("")
        self.latency_label.setStyleSheet("color: #9aa;")
        pbox = QGroupBox("Threshold and NMS (live)")
        pl = QFormLayout(pbox)
        trow = QHBoxLayout()
        trow.addWidget(self.thr_slider, 1)
        trow.addWidget(self.thr_label)
        pl.addRow("Score γ", trow)
        pl.addRow("NMS box", self.box_spin)
        pl.addRow("NMS IoU", self.iou_spin)
        pl.addRow(self.overlay_check)
        pl.addRow(self.latency_label)

        layout = QVBoxLayout(self)
        layout.addWidget(mbox)
        layout.addWidget(rbox)
        layout.addWidget(pbox)
        layout.addStretch(1)

        self._set_param_widgets(self.session.params)
        self.refresh_models()
        self.refresh_images()

        self.model_combo.currentIndexChanged.connect(self._on_model_selected)
        self.model_combo.activated.connect(self._on_user_choice)
        self.open_btn.clicked.connect(self._open_model)
        self.detect_btn.clicked.connect(self.run_detection)
        self.cancel_btn.clicked.connect(self.cancel)
        self.thr_slider.valueChanged.connect(self._on_params)
        self.box_spin.valueChanged.connect(self._on_params)
        self.iou_spin.valueChanged.connect(self._on_params)
        self.overlay_check.toggled.connect(self._update_overlay)
        self.viewer.layers.events.inserted.connect(self.refresh_images)
        self.viewer.layers.events.removed.connect(self.refresh_images)
        self.viewer.layers.selection.events.active.connect(self._on_active)
        self.session.detector_changed.connect(self._on_detector_changed)
        self.session.params_changed.connect(self._set_param_widgets)
        self._on_model_selected()
        self.choose_model_for_image()
        _api.start_torch_import()  # in the background: Detect never waits on the GUI thread

    # ------------------------------------------------------------------ models
    def refresh_models(self, select: str | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        try:
            models = _api.list_models()
        except Exception as exc:  # registry not available: classical only
            models = []
            self.run_label.setText(f"Model registry unavailable: {exc}")
        for label, p in models:
            self.model_combo.addItem(label, ("model", str(p)))
        cur = self.session.detector
        if cur is not None and cur.kind == "model" and cur.path not in [str(p) for _, p in models]:
            self.model_combo.addItem(f"{Path(cur.path).stem} (file)", ("model", cur.path))
        for name in _api.CLASSICAL:
            self.model_combo.addItem(f"Classical: {name}", ("classical", name))
        want = select
        if want is None and cur is not None:
            want = cur.path if cur.kind == "model" else cur.name
        # the requested one, else the bundled default_mc, else the first model, else classical
        labels = [self.model_combo.itemText(i) for i in range(self.model_combo.count())]
        idx = labels.index("default_mc") if "default_mc" in labels else 0
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i)[1] == want:
                idx = i
        self.model_combo.setCurrentIndex(idx)
        self.model_combo.blockSignals(False)

    def selected_model(self) -> tuple[str, str]:
        return self.model_combo.currentData() or ("classical", _api.CLASSICAL[0])

    def _on_model_selected(self, *_):
        kind, ref = self.selected_model()
        if kind == "model":
            try:
                meta = _api.read_model_metadata(ref)
                self.meta_label.setText(_describe(meta, ref))
            except Exception as exc:
                self.meta_label.setText(f"cannot read model: {exc}")
        else:
            self.meta_label.setText(f"{ref} candidates (no model needed)")

    def _open_model(self):
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a GravityNet model", "", "Models (*.safetensors)"
        )
        if path:
            self.use_model_file(path)

    def use_model_file(self, path: str) -> None:
        """Select a model file (not necessarily in the registry)."""
        self.user_chose_model = True
        self.choice_label.setText("")
        self.model_combo.addItem(f"{Path(path).stem} (file)", ("model", str(path)))
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)

    def _on_user_choice(self, *_):
        self.user_chose_model = True
        self.choice_label.setText("")

    def choose_model_for_image(self, img=None) -> str | None:
        """Unless the user picked a model, select the bundled default for the image's task:
        ``default_ma`` for a colour / fundus photograph, ``default_mc`` for a mammogram."""
        if self.user_chose_model or self.busy:
            return None
        img = img or self.image_layer()
        if img is None:
            return None
        task, why = _api.image_task(img.data, _api.layer_image_meta(img))
        want = {"ma": "default_ma", "mc": "default_mc"}.get(task or "", "default_mc")
        found = {self.model_combo.itemText(i): i for i in range(self.model_combo.count())}
        note = ""
        if want not in found and want != "default_mc":
            note = f" ({want} is not installed: using default_mc)"
            want = "default_mc"
        if want not in found:
            return None
        self.model_combo.setCurrentIndex(found[want])
        self.choice_label.setText(
            f"Model for <b>{img.name}</b>: <b>{want}</b>"
            + (f" — {why}" if task else "")
            + note
            + ". Pick another model to override."
        )
        return want

    def _on_detector_changed(self, handle):
        if handle is None:
            return
        self.refresh_models(select=handle.path if handle.kind == "model" else handle.name)
        self._set_param_widgets(self.session.params)
        self._on_model_selected()

    def _handle_for_selection(self):
        kind, ref = self.selected_model()
        cur = self.session.detector
        if cur is not None and (cur.path == ref or (cur.kind == "classical" and cur.name == ref)):
            return cur, None
        return None, (kind, ref)

    # ------------------------------------------------------------------ images
    def refresh_images(self, *_):
        cur = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        names = [la.name for la in self.viewer.layers if la.__class__.__name__ == "Image"]
        self.image_combo.addItems(names)
        if cur in names:
            self.image_combo.setCurrentText(cur)
        elif names:
            img = self.session.current_image_layer()
            self.image_combo.setCurrentText(img.name if img is not None else names[-1])
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != cur:  # another image: the model that fits it
            self.choose_model_for_image()

    def _on_active(self, *_):
        img = self.session.current_image_layer()
        if img is not None and img.name != self.image_combo.currentText():
            self.image_combo.setCurrentText(img.name)
            self.choose_model_for_image(img)

    def image_layer(self):
        name = self.image_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return self.session.current_image_layer()

    # ------------------------------------------------------------------ detection
    def run_detection(self) -> None:
        if self.busy:
            return
        img = self.image_layer()
        if img is None:
            self.run_label.setText("Open an image first.")
            return
        from napari.qt.threading import create_worker

        self.choose_model_for_image(img)
        handle, to_load = self._handle_for_selection()
        if (to_load is not None and to_load[0] == "model") or (
            handle is not None and handle.kind == "model"
        ):
            _api.start_torch_import()  # no-op when already started
        image = np.asarray(img.data, dtype=np.float32)
        key_layer = img.unique_id
        h_px, w_px = image.shape[:2]
        est = self._estimate_s(h_px * w_px)
        self._net_progress = (
            {"done": 0.0}
            if (to_load or ("", ""))[0] == "model"
            or (handle is not None and handle.kind == "model")
            else None
        )

        def work():
            lower_priority()  # this worker thread yields the CPU to the GUI thread
            h = handle
            if h is None:
                if to_load[0] == "model":
                    if not _api.torch_ready():
                        yield (2, "loading torch (first run only)…")
                        _api.wait_for_torch()
                    yield (8, f"loading {Path(to_load[1]).name}…")
                    h = _api.load_detector(to_load[1])
                else:
                    h = _api.classical_detector(to_load[1])
            eta = f", about {est:.0f} s" if est else ""
            yield (-1, f"running {h.name} on {h_px}×{w_px} px (H×W){eta}…")
            t0 = time.perf_counter()
            raw = _api.raw_output(h, image, self._net_progress)
            return h, raw, time.perf_counter() - t0

        self._run_estimate = est
        self.busy = True
        self._cancelled = False
        self.detect_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setValue(1)
        self.worker = create_worker(work)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda res: self._on_raw(img, key_layer, res))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _estimate_s(self, n_pixels: int) -> float | None:
        """Seconds a network run should take, from this session's last run (pixels / s)."""
        rate = getattr(self, "_px_per_s", None)
        return n_pixels / rate if rate else None

    def _on_progress(self, item):
        pct, text = item
        if pct < 0:  # the network run: one forward pass, no intermediate steps to count
            self._run_started = time.perf_counter()
            self._run_text = text
            self._tick.start()
            self._on_tick()
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(pct))
        self.run_label.setText(text)

    def _on_tick(self):
        """While the network runs: the share of its convolutions done (a GravityNet), else a
        bar from the measured speed, else a busy indicator; and the elapsed time."""
        t = time.perf_counter() - getattr(self, "_run_started", time.perf_counter())
        est = getattr(self, "_run_estimate", None)
        net = getattr(self, "_net_progress", None)
        if net is not None:
            self.progress.setRange(0, 100)
            self.progress.setValue(10 + int(88 * net.get("done", 0.0)))
        elif est:
            self.progress.setRange(0, 100)
            self.progress.setValue(min(95, 10 + int(85 * t / est)))
        else:
            self.progress.setRange(0, 0)  # busy indicator: no honest percentage yet
        self.run_label.setText(f"{getattr(self, '_run_text', '')} {t:.0f} s")

    def _on_raw(self, img, key_layer, res):
        if self._cancelled:
            self.run_label.setText("Cancelled; nothing changed.")
            return
        handle, raw, seconds = res
        shape = getattr(raw, "image_shape", None)
        if handle.kind == "model" and shape and seconds > 0:
            self._px_per_s = shape[0] * shape[1] / seconds
        if self.session.detector is not handle:
            self.session.set_detector(handle)
        self.device_label.setText(f"Device: {_api.device_name(handle)}")
        self.session.raw_cache[(key_layer, self.session.detector_key())] = raw
        self.session.save_raw(img, raw)
        self.progress.setRange(0, 100)
        self.progress.setValue(100)
        n = self.update_detections(img)
        self.run_label.setText(f"{handle.name}: {n} detections in {seconds:.2f} s")

    def _on_error(self, exc):
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.run_label.setText(f"Detection failed: {exc}")

    def _on_finished(self):
        self._tick.stop()
        self.busy = False
        self.worker = None
        self.detect_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def cancel(self) -> None:
        """Discard the running detection (the forward pass cannot be interrupted)."""
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self.run_label.setText("Cancelling…")

    # ------------------------------------------------------------------ live γ / NMS
    def _set_param_widgets(self, params: dict) -> None:
        for w in (self.thr_slider, self.box_spin, self.iou_spin):
            w.blockSignals(True)
        self.thr_slider.setValue(round(params["threshold"] * SLIDER_STEPS))
        self.thr_label.setText(f"{params['threshold']:.2f}")
        self.box_spin.setValue(params["nms_box"])
        self.iou_spin.setValue(params["nms_iou"])
        for w in (self.thr_slider, self.box_spin, self.iou_spin):
            w.blockSignals(False)

    def set_threshold(self, value: float) -> None:
        self.thr_slider.setValue(round(value * SLIDER_STEPS))

    def _on_params(self, *_):
        thr = self.thr_slider.value() / SLIDER_STEPS
        self.thr_label.setText(f"{thr:.2f}")
        self.session.params.update(
            threshold=thr, nms_box=self.box_spin.value(), nms_iou=self.iou_spin.value()
        )
        img = self.image_layer()
        if img is not None:
            self.update_detections(img)

    def update_detections(self, img) -> int:
        """Re-threshold the cached raw output of ``img`` into its detections layer."""
        raw = self.session.raw_for(img)
        if raw is None:
            self.latency_label.setText("Run Detect to tune γ / NMS on this image.")
            return 0
        t0 = time.perf_counter()
        p = self.session.params
        dets = _api.apply_params(
            self.session.detector, raw, p["threshold"], p["nms_box"], p["nms_iou"]
        )
        layer = self.session.detections_layer(img)
        rev = self.session.review_for(layer)
        rev.merge(dets.points, dets.scores, dedupe_radius=max(p["nms_box"] / 2.0, 1.5))
        self.last_update_ms = (time.perf_counter() - t0) * 1000.0
        self.latency_label.setText(
            f"{len(dets)} detections ≥ γ · updated in {self.last_update_ms:.1f} ms (no re-run)"
        )
        self.session.detections_updated.emit(layer, self.last_update_ms)
        self._update_overlay()
        return len(dets)

    def _update_overlay(self, *_):
        img = self.image_layer()
        raw = None
        if img is not None:
            raw = self.session.raw_for(img)
        show = self.overlay_check.isChecked() and raw is not None
        if not show:
            if self._overlay is not None and self._overlay in self.viewer.layers:
                self._overlay.visible = False
            return
        pts, scores = _api.raw_points(raw)
        keep = scores >= min(0.05, self.session.params["threshold"])
        name = f"{img.name} gravity points"
        if self._overlay is None or self._overlay not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            self._overlay = self.viewer.add_points(
                pts[keep],
                name=name,
                size=3,
                face_color="#39c5ff",
                border_width=0,
                opacity=0.6,
                metadata={"gravity": {"role": "overlay", "image_path": image_path_of(img)}},
            )
            # adding a layer selects it: give the selection back (the review keys live there)
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            self._overlay.data = pts[keep]
            self._overlay.visible = True
