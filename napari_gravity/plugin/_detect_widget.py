"""The Detect dock: pick a model, run it in a worker, tune γ / NMS live from the cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import create_widget
from napari.layers import Image
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QFileDialog, QSlider

from . import _api, _torch, _ui
from ._session import ROLE_KEY, Dock, image_path_of
from .runner import lower_priority

SLIDER_STEPS = 1000


def _describe(meta: dict, path: str | None) -> str:
    cfg, prov = meta.get("config") or {}, meta.get("provenance") or {}
    parent = prov.get("parent")
    parent = parent.get("path") if isinstance(parent, dict) else parent
    bits = [
        cfg and f"{cfg.get('backbone', '?')}, step {cfg.get('step', '?')}",
        prov.get("date") and f"trained {str(prov['date'])[:16]}",
        prov.get("epochs") is not None and f"{prov['epochs']} epochs",
        parent and f"from {Path(str(parent)).name}",
        meta.get("threshold") is not None and f"γ {float(meta['threshold']):.2f}",
        isinstance(meta.get("tta"), dict)
        and "d8" in meta["tta"]
        and f"8-view TTA γ {float(meta['tta']['d8'].get('threshold', 0)):.2f}",
        path and Path(path).name,
    ]
    return " · ".join(b for b in bits if b) or "no metadata"


class DetectionCancelled(Exception):
    """Raised in the worker by the progress callback when the user pressed Cancel."""


class DetectWidget(Dock):
    """Detect lesions in the selected image (see docs/plugin.md)."""

    CANCELLED = "Cancelled; nothing changed."

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.worker = None
        self.busy = False
        self.last_update_ms: float | None = None
        self.net_progress: float | None = None  # share of the forward pass done (a model)
        self.user_chose_model = False  # else the model follows the image's task (mc / ma)
        self._cancelled = False
        self._overlay = None
        self._tick = _ui.timer(250, self._on_tick, parent=self)

        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Models in the registry folder; classical detectors stand in")
        self.device_label = _ui.label(f"Device: {_torch.device_name()}")
        self.choice_label = _ui.label()
        self.meta_label = _ui.label(style=_ui.MUTED)
        self.image_combo = create_widget(annotation=Image, label="Image")
        self.detect_btn = _ui.button("Detect", self.run_detection, bold=True)
        self.cancel_btn = _ui.button("Cancel", self.cancel, enabled=False)
        self.tta_check = _ui.checkbox(
            "Average 8 flipped / turned views",
            checked=True,
            tip="Test-time augmentation: on images up to 2.5 megapixels (tiles, crops), where the "
            "model is calibrated for it, the network runs on the 8 flips and 90° turns and their "
            "outputs are averaged (more accurate, 8× the time); whole mammograms: see below. "
            "Takes effect at the next Detect.",
        )
        self.whole_check = _ui.checkbox(
            "… and 4 flipped views on whole mammograms",
            checked=True,
            tip="Above 2.5 megapixels (whole mammograms) the network runs on the image and its 3 "
            "flips and averages them: on real films +18 AUFROC points over one pass, at 3-4× "
            "the time (a 3328×2560 mammogram on 2 CPU cores: 7 s instead of 1.7 s; "
            "benchmarks/whole_tta.py). Off: one pass, the fastest. Applies when the box "
            "above is on; takes effect at the next Detect.",
        )
        self.progress = _ui.ProgressBar()
        self.run_label = _ui.label()
        self.thr_slider = QSlider(Qt.Orientation.Horizontal)
        self.thr_slider.setRange(0, SLIDER_STEPS)
        self.thr_label = _ui.label("0.50")
        self.box_spin = _ui.spin(1.0, 64.0, 1.0, decimals=0, suffix=" px")
        self.iou_spin = _ui.spin(0.0, 1.0, 0.05)
        self.overlay_check = _ui.checkbox("Show moved gravity points", self._update_overlay)
        self.latency_label = _ui.label(style=_ui.MUTED)
        open_btn = _ui.button("Open…", self._open_model, tip="Load a model file (.safetensors)")
        _ui.stack(
            self,
            _ui.group(
                "Model",
                [self.model_combo, open_btn],
                self.choice_label,
                self.meta_label,
                self.device_label,
            ),
            _ui.group(
                "Run",
                ("Image", self.image_combo.native),
                [self.detect_btn, self.cancel_btn],
                self.tta_check,
                self.whole_check,
                self.progress,
                self.run_label,
                form=True,
            ),
            _ui.group(
                "Threshold and NMS (live)",
                ("Score γ", [self.thr_slider, self.thr_label]),
                ("NMS box", self.box_spin),
                ("NMS IoU", self.iou_spin),
                self.overlay_check,
                self.latency_label,
                form=True,
            ),
        )

        self._set_param_widgets(self.session.params)
        self.refresh_models()
        self.model_combo.currentIndexChanged.connect(self._on_model_selected)
        self.model_combo.activated.connect(self._on_user_choice)
        for w in (self.thr_slider, self.box_spin, self.iou_spin):
            w.valueChanged.connect(self._on_params)
        self.image_combo.changed.connect(lambda img: self.choose_model_for_image(img))
        self.viewer.layers.selection.events.active.connect(self._on_active)
        self.session.detector_changed.connect(self._on_detector_changed)
        self.session.params_changed.connect(self._set_param_widgets)
        self.session.use_model.connect(self.run_model)
        self._on_model_selected()
        QTimer.singleShot(0, self.reset_choices)  # docked by then: the combo finds its viewer
        _torch.start_torch_import()  # in the background: Detect never waits on the GUI thread

    # ------------------------------------------------------------------ models
    def refresh_models(self, select: str | None = None) -> None:
        from napari_gravity.core import registry

        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        try:
            models = [(e.label, str(e.path)) for e in registry.list_models(with_metadata=False)]
        except Exception as exc:  # registry not available: classical only
            models = []
            self.run_label.setText(f"Model registry unavailable: {exc}")
        cur = self.session.detector
        if cur is not None and cur.path and cur.path not in [p for _, p in models]:
            models.append((f"{Path(cur.path).stem} (file)", cur.path))
        for label, p in models:
            combo.addItem(label, ("model", p))
        for name in _api.CLASSICAL:
            combo.addItem(f"Classical: {name}", ("classical", name))
        if select is None and cur is not None:
            select = cur.path or cur.name
        # the requested one, else the bundled default_mc, else the first model, else classical
        idx = max(combo.findText("default_mc"), 0)
        for i in range(combo.count()):
            idx = i if combo.itemData(i)[1] == select else idx
        combo.setCurrentIndex(idx)
        combo.blockSignals(False)
        self.session.model_selected.emit(self.selected_model())

    def selected_model(self) -> tuple[str, str]:
        return self.model_combo.currentData() or ("classical", _api.CLASSICAL[0])

    def _on_model_selected(self, *_):
        from napari_gravity.core.model_io import read_model_metadata

        kind, ref = self.selected_model()
        self.session.model_selected.emit((kind, ref))
        if kind != "model":
            self.meta_label.setText(f"{ref} candidates (no model needed)")
            return
        try:
            self.meta_label.setText(_describe(read_model_metadata(ref), ref))
        except Exception as exc:
            self.meta_label.setText(f"cannot read model: {exc}")

    def _open_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a GravityNet model", "", "*.safetensors")
        if path:
            self.use_model_file(path)

    def use_model_file(self, path: str) -> None:
        """Select a model file (not necessarily in the registry)."""
        self._on_user_choice()
        self.model_combo.addItem(f"{Path(path).stem} (file)", ("model", str(path)))
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)

    def _on_user_choice(self, *_):
        self.user_chose_model = True
        self.choice_label.setText("")

    def run_model(self, path: str) -> None:
        """Use ``path`` from now on (the user's choice) and run it on the current image."""
        self._on_user_choice()
        self.refresh_models(select=path)
        self._show_image(self.session.current_image_layer())
        self.run_detection()

    def choose_model_for_image(self, img=None) -> str | None:
        """Unless the user picked a model, select the bundled default for the image's task:
        ``default_ma`` for a colour / fundus photograph, ``default_mc`` for a mammogram."""
        img = img or self.image_layer()
        if self.user_chose_model or self.busy or img is None:
            return None
        meta = dict(img.metadata.get(ROLE_KEY, {}).get("image_meta") or {})
        if image_path_of(img):
            meta.setdefault("path", image_path_of(img))
        task, why = _api.image_task(img.data, meta)
        want = {"ma": "default_ma"}.get(task or "", "default_mc")
        note = ""
        if self.model_combo.findText(want) < 0 and want != "default_mc":
            note, want = f" ({want} is not installed: using default_mc)", "default_mc"
        if self.model_combo.findText(want) < 0:
            return None
        self.model_combo.setCurrentIndex(self.model_combo.findText(want))
        why = f" — {why}" if task else ""
        self.choice_label.setText(
            f"Model for <b>{img.name}</b>: <b>{want}</b>{why}{note}. Pick another model to override.",
        )
        return want

    def _on_detector_changed(self, detector):
        if detector is not None:
            self.refresh_models(select=detector.path or detector.name)
            self._set_param_widgets(self.session.params)
            self._on_model_selected()

    # ------------------------------------------------------------------ images
    def reset_choices(self, *_):
        """napari calls this when layers come and go: the image list follows (and the model
        with it, through the combo's ``changed``)."""
        self.image_combo.reset_choices()

    def _show_image(self, img) -> None:
        if img is not None and img != self.image_combo.value:
            self.reset_choices()
            if img in self.image_combo.choices:
                self.image_combo.value = img

    def _on_active(self, *_):
        self._show_image(self.session.current_image_layer())

    def image_layer(self):
        return self.image_combo.value or self.session.current_image_layer()

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
        kind, ref = self.selected_model()
        detector = self.session.detector
        if detector is None or (detector.path or detector.name) != ref:
            detector = None
        if kind == "model":
            _torch.start_torch_import()  # no-op when already started
        image = np.asarray(img.data, dtype=np.float32)
        self.net_progress = 0.0 if kind == "model" else None
        tta = "auto" if self.tta_check.isChecked() else "off"
        whole = "flips" if self.whole_check.isChecked() else "off"
        meta = dict(img.metadata.get(ROLE_KEY, {}).get("image_meta") or {})
        colour_path = image_path_of(img) if meta.get("colour") else None

        def work():
            lower_priority()  # this worker thread yields the CPU to the GUI thread
            d = detector
            if d is None and kind == "model":
                if not _torch.torch_ready():
                    yield (2, "loading torch (first run only)…")
                    _torch.wait_for_torch()
                yield (8, f"loading {Path(ref).name}…")
                d = _api.load_detector(ref, tta=tta)
            elif d is None:
                d = _api.classical_detector(ref)
            if kind == "model":
                d.detector.tta = tta  # the boxes' state at this Detect
                d.detector.tta_whole = whole
            yield (-1, f"running {d.name} on {image.shape[0]}×{image.shape[1]} px (H×W)…")
            t0 = time.perf_counter()
            try:
                if kind == "model":  # a colour photograph's field of view: from its colours
                    fov = _api.fov_source_of(colour_path)
                    raw = d.raw(image, self._on_net_progress, fov)
                else:
                    raw = d.raw(image, None)
            except DetectionCancelled:
                return None
            return d, raw, time.perf_counter() - t0

        self.busy, self._cancelled = True, False
        self.detect_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setValue(1)
        self.worker = create_worker(work)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda res: self._on_raw(img, res))
        self.worker.errored.connect(lambda exc: self._end(f"Detection failed: {exc}"))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_net_progress(self, fraction: float) -> None:
        """In the worker, after each convolution: a cancel stops the forward pass here."""
        if self._cancelled:
            raise DetectionCancelled
        self.net_progress = fraction

    def _on_progress(self, item):
        pct, text = item
        self.run_label.setText(text)
        if pct >= 0:
            self.progress.setValue(int(pct))
            return
        self._run_started, self.run_text = time.perf_counter(), text  # the network run
        self._tick.start()
        self._on_tick()

    def _on_tick(self):
        """While the network runs: the share of its convolutions done (a GravityNet), else a
        busy indicator; and the elapsed time."""
        t = time.perf_counter() - self._run_started
        self.progress.setRange(0, 0 if self.net_progress is None else 100)
        self.progress.setValue(10 + int(88 * (self.net_progress or 0.0)))
        self.run_label.setText(f"{self.run_text} {t:.0f} s")

    def _on_raw(self, img, res):
        if self._cancelled or res is None:
            return
        detector, raw, seconds = res
        if self.session.detector is not detector:
            self.session.set_detector(detector)  # its defaults: those of this run's TTA mode
        elif getattr(detector, "mode_changed", False):  # another TTA mode: its calibrated γ
            self.session.restore_params(detector.defaults)
        self.device_label.setText(f"Device: {_torch.device_name(detector)}")
        self.session.raw_cache[(img.unique_id, self.session.detector_key())] = raw
        self.session.save_raw(img, raw)
        n = self.update_detections(img)
        views = {"d8": ", 8 views averaged", "flips": ", 4 views averaged"}
        how = views.get(getattr(raw, "tta", "off"), "")
        zoom = float(getattr(raw, "zoom", 1.0))
        if zoom != 1.0:  # a fundus photograph resampled to the model's field-of-view scale
            how += f", resampled ×{zoom:.2f} to the model's field-of-view scale"
        tile = getattr(detector, "tile_threshold", None)
        thr = (detector.defaults or {}).get("threshold")
        if tile is not None and thr is not None and thr > tile + 1e-6:
            how += (
                f"; γ {thr:.2f} for {detector.area / 1e6:.1f} MP of tissue (as many expected "
                f"false marks per image as on a validation image; {tile:.2f} at their size)"
            )
        if getattr(detector, "note", ""):
            how += f"; {detector.note}"
        self._end(f"{detector.name}: {n} detections in {seconds:.2f} s{how}", 100)

    def _end(self, text: str, percent: int = 0) -> None:
        self._tick.stop()
        self.progress.setRange(0, 100)
        self.progress.setValue(percent)
        self.run_label.setText(text)

    def _on_finished(self):
        if self._cancelled:  # a cancelled worker returns nothing
            self._end(self.CANCELLED)
        self.busy, self.worker = False, None
        self.detect_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def cancel(self) -> None:
        """Stop the running detection: between loading steps, or inside the forward pass at
        its next convolution; nothing of it is kept."""
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self._end("Cancelling…", self.progress.value())

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
        box, iou = self.box_spin.value(), self.iou_spin.value()
        self.session.params.update(threshold=thr, nms_box=box, nms_iou=iou)
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
        dets = _api.detections(raw, p["threshold"], p["nms_box"], p["nms_iou"])
        layer = self.session.detections_layer(img)
        rev = self.session.review_for(layer)
        rev.merge(dets.points, dets.scores, dedupe_radius=max(p["nms_box"] / 2.0, 1.5))
        self.last_update_ms = (time.perf_counter() - t0) * 1000.0
        text = f"{len(dets)} detections ≥ γ · updated in {self.last_update_ms:.1f} ms (no re-run)"
        if not len(dets):  # say what lies below γ instead of a bare "0" on a real image
            low = min(raw.floor, p["threshold"])
            top = _api.detections(raw, low, p["nms_box"], p["nms_iou"])
            text = "0 detections ≥ γ · " + (
                f"best candidate scores {top.scores[0]:.2f}: lower γ to see candidates"
                if len(top)
                else f"no candidate scores ≥ {low:g}"
            )
        self.latency_label.setText(text)
        self.session.detections_updated.emit(layer, self.last_update_ms)
        self._update_overlay()
        return len(dets)

    def _update_overlay(self, *_):
        img = self.image_layer()
        raw = self.session.raw_for(img) if img is not None else None
        layers = self.viewer.layers
        if not self.overlay_check.isChecked() or raw is None:
            if self._overlay is not None and self._overlay in layers:
                self._overlay.visible = False
            return
        keep = raw.scores >= min(0.05, self.session.params["threshold"])
        pts = np.asarray(raw.moved_points, dtype=float)[keep]
        if self._overlay is not None and self._overlay in layers:
            self._overlay.data, self._overlay.visible = pts, True
            return
        active = layers.selection.active
        self._overlay = self.viewer.add_points(
            pts,
            name=f"{img.name} gravity points",
            size=3,
            face_color="#39c5ff",
            border_width=0,
            opacity=0.6,
            metadata={ROLE_KEY: {"role": "overlay", "image_path": image_path_of(img)}},
        )
        if active is not None and active in layers:  # adding a layer selects it: give the
            layers.selection.active = active  # selection back (the review keys live there)
