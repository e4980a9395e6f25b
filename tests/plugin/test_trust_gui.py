"""The review workstation a radiologist trusts (issue 11), driven through the real docks under
Xvfb: visible markers, live NMS, napari-native files, honest retraining, no frozen GUI.

Run: QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/pytest tests/plugin
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


def open_gui(make_napari_viewer, show=True):
    """The viewer and docks as the launcher (``open_viewer``) makes them: torch imported while
    the window is still hidden."""
    from napari_gravity.plugin.__main__ import docked_viewer

    viewer, docks = docked_viewer(make_napari_viewer, size=(1400, 1000))
    if show:
        viewer.window.show()
    return viewer, {n: w for n, (_d, w) in docks.items()}


GUI_DRAWING = ("/napari/", "/vispy/", "/qtpy/", "/superqt/", "/matplotlib/")
#: a widget call on top of the stack: Qt lays out / paints in C++ (GIL released), not our work
QT_CALL = re.compile(r"\.(set[A-Z]\w*|add\w*|clear|show|hide|repaint|update)\(")


class LagMeter:
    """How long the GUI's event loop stalls, and in whose code.

    A 10 ms QTimer records the gaps between its ticks. A watchdog thread samples the GUI
    thread's Python stack whenever no tick came for 100 ms: a stall inside napari-gravity code
    (a freeze the plugin causes) is told apart from one where the GUI thread sits in Qt's C++
    event loop or a widget call (the OS did not schedule it, or Mesa's software OpenGL was drawing), which on a
    loaded 2-core machine happens with no plugin code running at all.
    """

    STALL_S = 0.1

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self.ours: list[str] = []  # stacks sampled in plugin code during a stall
        self.any_stack: list[str] = []  # every stack sampled during a stall (diagnostics)
        self._last = time.perf_counter()
        self._stop = False
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def _watch(self, main_id):
        import sys
        import traceback

        while not self._stop:
            time.sleep(0.01)
            if time.perf_counter() - self._last < self.STALL_S:
                continue
            frame = sys._current_frames().get(main_id)
            stack = traceback.extract_stack(frame) if frame is not None else []
            if os.environ.get("GRAVITY_LAG_DUMP"):  # every thread's top frames, for diagnosis
                tops = []
                for tid, fr in sys._current_frames().items():
                    st = traceback.extract_stack(fr)[-3:]
                    tops.append(
                        f"[{tid}] " + " | ".join(f"{f.filename[-40:]}:{f.lineno}" for f in st)
                    )
                self.any_stack.append(
                    f"{1000 * (time.perf_counter() - self._last):.0f} ms\n" + "\n".join(tops)
                )
            ours = [i for i, f in enumerate(stack) if "napari_gravity" in f.filename]
            # plugin code, or what it called (torch, numpy, I/O), at the top of the stack; a
            # synchronous Qt repaint it triggered (napari / vispy drawing) is not counted
            qt_call = ours and ours[-1] == len(stack) - 1 and QT_CALL.search(stack[-1].line or "")
            if (
                ours
                and not qt_call
                and not any(k in f.filename for f in stack[ours[-1] + 1 :] for k in GUI_DRAWING)
            ):
                self.ours.append("".join(traceback.format_list(stack[-6:])))

    def start(self):
        import threading

        self._last = time.perf_counter()
        self.timer.start()
        main_id = threading.main_thread().ident
        threading.Thread(target=self._watch, args=(main_id,), daemon=True).start()
        return self

    def stop(self) -> dict:
        self._stop = True
        self.timer.stop()
        gaps = np.asarray(self.gaps) * 1000
        if os.environ.get("GRAVITY_LAG_DUMP"):  # every thread's top frames at each stall
            print("\n=== stall stacks ===\n" + "\n---\n".join(dict.fromkeys(self.any_stack)))
        return {
            "max_ms": round(float(gaps.max(initial=0)), 1),
            "p99_ms": round(float(np.percentile(gaps, 99)) if len(gaps) else 0.0, 1),
            "stalls": int((gaps > 1000 * self.STALL_S).sum()),
            "in_plugin_code": len(self.ours),
            "where": self.ours[:2],
        }


def run_detect(qtbot, det, timeout=120_000):
    det.run_detection()
    qtbot.waitUntil(lambda: not det.busy, timeout=timeout)


def sample_in_detect_dock(make_napari_viewer):
    """(viewer, Detect dock, image layer) with the synthetic mammogram sample open; skips
    without a bundled default model."""
    from napari_gravity.core.registry import default_model_path

    if default_model_path() is None:
        pytest.skip("no bundled default model")
    viewer, w = open_gui(make_napari_viewer)
    viewer.open_sample("napari-gravity", "mammogram")
    return viewer, w["Detect lesions"], viewer.layers["synthetic mammogram"]


def test_live_nms_reaches_the_layer_and_overlay_keeps_the_selection(
    make_napari_viewer, qtbot, gravity_env
):
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.plugin import _api

    viewer, det, img = sample_in_detect_dock(make_napari_viewer)
    assert det.selected_model() == ("model", str(default_model_path()))
    run_detect(qtbot, det)
    assert "512×512 px (H×W)" in det.run_text
    # real progress: the share of the forward pass's convolutions done (not a fixed 30 %)
    assert det.net_progress == pytest.approx(1.0)
    session = det.session
    layer = session.detections_layer(img, create=False)
    pred = _api.load_detector(default_model_path())
    prog = []
    raw = pred.raw(np.asarray(img.data, np.float32), prog.append)
    # a 512² image: the 8-view test-time augmentation, with the γ / NMS calibrated for it, γ
    # raised by the area rule (512² px of tissue, more than a validation tile's 384²)
    assert raw.tta == "d8" and "8 views averaged" in det.run_label.text()
    d8 = pred.detector.params_for("d8", pred.area)
    assert d8["threshold"] > pred.detector.params_for("d8")["threshold"] == pred.tile_threshold
    assert f"γ {d8['threshold']:.2f} for 0.3 MP of tissue" in det.run_label.text()
    assert det.thr_slider.value() == round(d8["threshold"] * 1000)
    assert (det.box_spin.value(), det.iou_spin.value()) == (d8["nms_box"], d8["nms_iou"])
    assert prog[-1] == pytest.approx(1.0) and prog == sorted(prog)
    steps = np.diff([0.0, *prog])  # many steps, none a large jump
    assert len(steps) > 10 and steps.max() < 0.5
    counts = {}
    for box, iou in ((7, 0.5), (15, 0.5), (15, 0.2), (31, 0.1)):
        det.box_spin.setValue(box)
        det.iou_spin.setValue(iou)
        want = pred.detector.from_raw(
            raw, threshold=det.thr_slider.value() / 1000, nms_box=box, nms_iou=iou
        )
        counts[(box, iou)] = (len(layer.data), len(want))
        assert len(layer.data) == len(want), counts
    print("NMS counts (layer, core):", counts)
    # typed into the spin boxes, as a user does
    from qtpy.QtCore import Qt

    for spin, text in ((det.box_spin, "15"), (det.iou_spin, "0.2")):
        spin.lineEdit().selectAll()
        qtbot.keyClicks(spin.lineEdit(), text)
        qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)
    want = pred.detector.from_raw(
        raw, threshold=det.thr_slider.value() / 1000, nms_box=15, nms_iou=0.2
    )
    assert len(layer.data) == len(want), (len(layer.data), len(want))
    assert counts[(31, 0.1)][0] < counts[(7, 0.5)][0]
    # no detection at γ: the dock names the best candidate below it (the core's top score)
    gamma = det.thr_slider.value() / 1000
    det.set_threshold(1.0)
    assert len(layer.data) == 0
    best = pred.detector.from_raw(raw, threshold=raw.floor, nms_box=15, nms_iou=0.2).scores[0]
    lbl = det.latency_label
    assert f"best candidate scores {best:.2f}: lower γ" in lbl.text()
    qtbot.waitUntil(lambda: lbl.height() >= lbl.heightForWidth(lbl.width()), timeout=2000)
    assert lbl.heightForWidth(lbl.width()) > lbl.fontMetrics().lineSpacing()  # 2+ lines shown
    det.set_threshold(gamma)
    assert len(layer.data) == len(want) and "best candidate" not in det.latency_label.text()

    # "Show moved gravity points" adds a layer but leaves the detections selected: `a` accepts
    viewer.layers.selection.active = layer
    det.overlay_check.setChecked(True)
    assert f"{img.name} gravity points" in viewer.layers
    assert viewer.layers.selection.active == layer  # (the dock's layers are napari proxies)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    layer.selected_data = {0}
    qtbot.keyClick(canvas, "a")
    assert layer.features["status"].tolist().count("accepted") == 1
    assert layer.selected_data == {0}


def test_the_tta_box_switches_between_one_pass_and_8_views_with_their_own_gamma(
    make_napari_viewer, qtbot, gravity_env
):
    _viewer, det, img = sample_in_detect_dock(make_napari_viewer)
    assert det.tta_check.isChecked()  # on by default
    det.tta_check.setChecked(False)
    run_detect(qtbot, det)
    d = det.session.detector
    assert det.session.raw_for(img).tta == "off" and "views averaged" not in det.run_label.text()
    one = d.detector.params_for("off", d.area)["threshold"]
    assert det.thr_slider.value() == round(one * 1000)
    det.tta_check.setChecked(True)
    run_detect(qtbot, det)
    assert det.session.detector is d  # the same model, another mode: its calibrated γ
    assert det.session.raw_for(img).tta == "d8" and "8 views averaged" in det.run_label.text()
    d8 = d.detector.params_for("d8", d.area)["threshold"]
    assert det.thr_slider.value() == round(d8 * 1000) != round(one * 1000)
    # an image above the 8-view limit (a whole mammogram; here the limit is lowered): the
    # second box averages the 4 flips, with the flips' calibrated γ; unticked, one pass
    d.detector.tta_max_pixels = 1.0
    assert det.whole_check.isChecked()  # on by default
    run_detect(qtbot, det)
    assert det.session.raw_for(img).tta == "flips" and "4 views averaged" in det.run_label.text()
    flips = d.detector.params_for("flips", d.area)["threshold"]
    assert det.thr_slider.value() == round(flips * 1000)
    det.whole_check.setChecked(False)
    run_detect(qtbot, det)
    assert det.session.raw_for(img).tta == "off"


def test_a_small_fundus_is_resampled_to_the_ma_models_scale(make_napari_viewer, qtbot, gravity_env):
    """The synthetic fundus sample shows its whole field of view ~570 px across, half the
    1,200 px `default_ma` learned at: Detect resamples it and says so; the marks land in the
    image's own pixels, inside the field of view."""
    import re

    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.masks import fundus_mask

    if default_model_path("ma") is None:
        pytest.skip("no bundled default_ma")
    viewer, w = open_gui(make_napari_viewer)
    det = w["Detect lesions"]
    viewer.open_sample("napari-gravity", "fundus")
    img = viewer.layers["synthetic fundus"]
    viewer.layers.selection.active = img
    assert det.model_combo.currentText() == "default_ma"
    run_detect(qtbot, det)
    found = re.search(
        r"resampled ×([0-9.]+) to the model's field-of-view scale", det.run_label.text()
    )
    assert found, det.run_label.text()
    mask = fundus_mask(np.asarray(img.data, np.float32))
    want = 1200.0 / (2 * np.sqrt(mask.sum() / np.pi))  # a disc of the mask's area
    assert float(found.group(1)) == pytest.approx(want, rel=0.02)
    raw = det.session.raw_for(img)
    assert raw.zoom == pytest.approx(float(found.group(1)), abs=0.005)
    assert raw.image_shape == img.data.shape[:2]
    layer = det.session.detections_layer(img, create=False)
    pts = np.asarray(layer.data)
    if len(pts):
        iy, ix = np.floor(pts + 0.5).astype(int).T
        assert mask[iy, ix].all()


def test_cancel_stops_the_forward_pass_and_keeps_nothing(
    make_napari_viewer, qtbot, gravity_env, tiny_model
):
    """Cancel during Detect on a large image: the worker ends inside the forward pass (at the
    next convolution, not after the whole pass) and nothing of the run is kept."""
    viewer, w = open_gui(make_napari_viewer)
    det = w["Detect lesions"]
    rng = np.random.default_rng(0)
    img = viewer.add_image(rng.random((2048, 2048), dtype=np.float32), name="big")
    viewer.layers.selection.active = img
    det.use_model_file(str(tiny_model))
    det.run_detection()
    qtbot.waitUntil(lambda: (det.net_progress or 0.0) > 0.0, timeout=120_000)
    t0 = time.perf_counter()
    det.cancel_btn.click()
    qtbot.waitUntil(lambda: not det.busy, timeout=60_000)
    stopped_s = time.perf_counter() - t0
    session = det.session
    print(f"cancel: stopped {stopped_s:.2f} s after the click, at {det.net_progress:.0%}")
    assert det.net_progress < 1.0  # the pass did not run to its end
    assert det.run_label.text() == det.CANCELLED
    assert session.detector is None and len(session.raw_cache) == 0
    assert session.detections_layer(img, create=False) is None
    assert stopped_s < 10
    # the next Detect (a small image: seconds) is a normal full run
    small = viewer.add_image(rng.random((256, 256), dtype=np.float32), name="small")
    viewer.layers.selection.active = small
    run_detect(qtbot, det)
    assert det.net_progress == pytest.approx(1.0) and "detections in" in det.run_label.text()
    assert session.detections_layer(img, create=False) is None  # still nothing for "big"


def test_markers_are_visible_outline_only_and_colour_blind_safe(make_napari_viewer, qtbot):
    from napari_gravity.plugin import _style
    from napari_gravity.plugin._session import get_session

    # colours: every pair of GT / pending / accepted / rejected / added stays apart (CIELAB ΔE)
    # for normal vision and the three dichromacies (the old greens were ΔE 13.6 / 2.5 apart)
    for vision in ("normal", "protanopia", "deuteranopia", "tritanopia"):
        d, pair = _style.min_pair_distance(_style.PALETTE, vision)
        assert d >= 20, (vision, pair, d)

    viewer, w = open_gui(make_napari_viewer)
    rev_w = w["Review"]
    h, wd = 4736, 2624  # a full-field mammogram's size
    img = viewer.add_image(np.full((h, wd), 0.5, np.float32), name="big", contrast_limits=(0, 1))
    session = get_session(viewer)
    layer = session.detections_layer(img)
    pts = np.array([[600.0, 500.0], [2400.0, 1300.0], [4000.0, 2000.0], [1500.0, 2200.0]])
    rev = session.review_for(layer)
    rev.merge(pts, np.array([0.9, 0.8, 0.7, 0.6]), dedupe_radius=3)
    rev.set_status([1], "accepted")
    rev.set_status([2], "rejected")
    gt = session.gt_layer(img)
    gt.data = pts[:1]
    # the layers use the palette: status rings, GT squares, transparent faces
    border = {
        s: tuple(np.round(c, 3))
        for s, c in zip(layer.features["status"], layer.border_color, strict=True)
    }
    for s in ("pending", "accepted", "rejected"):
        assert border[s][:3] == tuple(np.round(_style.rgba(_style.PALETTE[s])[:3], 3))
    assert np.all(layer.face_color[:, 3] == 0) and np.all(gt.face_color[:, 3] == 0)
    assert str(gt.symbol[0]) != str(layer.symbol[0])

    # whole-image view: each ring still covers >= MIN_SCREEN_PX on the screen
    viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))  # rings above GT squares
    viewer.layers.selection.active = layer
    viewer.reset_view()
    qtbot.waitUntil(lambda: np.min(layer.size) > _style.POINT_SIZE, timeout=2000)
    assert np.min(layer.size) * viewer.camera.zoom == pytest.approx(_style.MIN_SCREEN_PX, rel=0.05)
    assert viewer.camera.zoom * _style.POINT_SIZE < 6  # 11 data px would be a few screen px
    shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    yellow = np.array([int(_style.PALETTE["pending"][i : i + 2], 16) for i in (1, 3, 5)])
    is_yellow = np.abs(shot[..., :3] - yellow).sum(-1) < 60
    assert int(is_yellow.sum()) >= 30, int(is_yellow.sum())  # one pending ring: its outline
    # ... and it is an outline even that small: the image shows through its centre
    from scipy import ndimage as ndi

    lab, n = ndi.label(ndi.binary_dilation(is_yellow), structure=np.ones((3, 3)))
    sizes = ndi.sum(is_yellow, lab, range(1, n + 1))
    rings = [b for b, sz in zip(ndi.find_objects(lab), sizes, strict=True) if sz >= 20]
    assert len(rings) == 2, (n, sizes)  # the two pending detections
    for box in rings:
        assert box[0].stop - box[0].start >= _style.MIN_SCREEN_PX - 2, box
        cy, cx = ((box[0].start + box[0].stop) // 2, (box[1].start + box[1].stop) // 2)
        assert np.abs(shot[cy, cx, :3] - 128).max() <= 6, shot[cy, cx]

    # "next pending" centres and zooms on it; the ring never covers the lesion (hollow centre)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, "n")
    (i,) = layer.selected_data
    assert layer.features["status"][i] == "pending"
    np.testing.assert_allclose(viewer.camera.center[-2:], layer.data[i], atol=1)
    assert viewer.camera.zoom >= min(viewer.canvas.size) / 96 - 1e-6
    qtbot.waitUntil(lambda: np.max(layer.size) == pytest.approx(_style.POINT_SIZE), timeout=2000)
    shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    cy, cx = shot.shape[0] // 2, shot.shape[1] // 2
    centre = shot[cy - 2 : cy + 3, cx - 2 : cx + 3, :3]
    assert np.abs(centre - 128).max() <= 3, centre[2, 2]  # the image's own grey

    # the score as a text label, on demand
    assert not layer.text.visible
    rev_w.scores_check.setChecked(True)
    assert layer.text.visible and "score" in layer.text.string.format
    rev_w.scores_check.setChecked(False)
    assert not layer.text.visible


def mark_reviewed(paths):
    """Sidecars saying each image's review is done, its ground truth accepted."""
    from napari_gravity.plugin import _api
    from napari_gravity.plugin import review as rv
    from napari_gravity.plugin.sidecar import Review, sidecar_path, write_review

    for p in paths:
        gt = _api.read_points_csv(Path(p).with_suffix(".csv")).points
        feats = rv.make_features(np.full(len(gt), 0.9), "model", "accepted")
        write_review(sidecar_path(p), Review(Path(p).name, gt, feats, "done", (256, 256)))


HAS_TINY = (ROOT / "training" / "configs" / "tiny.yaml").exists()
#: overall stall bound on a 2-core box shared with other jobs (the issue's bar, 100 ms, holds on an
#: idle one: ``GRAVITY_LAG_MS=100``, as benchmarks/gui_lag.py runs it)
LAG_MS = float(os.environ.get("GRAVITY_LAG_MS", "1000"))


@pytest.mark.skipif(not HAS_TINY, reason="training/configs/tiny.yaml not available")
def test_cancel_registers_nothing_and_the_gui_never_stalls(
    make_napari_viewer, qtbot, gravity_env, image_folder
):
    from napari_gravity.core.registry import default_model_path

    if default_model_path() is None:
        pytest.skip("no bundled default model")
    _viewer, w = open_gui(make_napari_viewer)
    det, rev_w, rt = w["Detect lesions"], w["Review"], w["Retrain"]
    session = det.session
    mark_reviewed(image_folder)
    rev_w.set_folder(image_folder[0].parent)
    rev_w.step_image(+1)
    lag = {}

    # --- fine-tune before any Detect: the selected default model is the parent
    assert session.detector is None
    assert det.selected_model() == ("model", str(default_model_path()))
    rt.config_edit.setText("tiny")
    rt.epochs_spin.setValue(200)
    meter = LagMeter().start()
    run = rt.launch()
    assert run is not None, rt.state_label.text()
    assert run.cmd[run.cmd.index("--init") + 1] == str(default_model_path())
    qtbot.waitUntil(lambda: any(e["event"] == "step" for e in run.events), timeout=120_000)
    rt.cancel_btn.click()
    qtbot.waitUntil(lambda: run.state not in ("running", "cancelling"), timeout=90_000)
    lag["retrain"] = meter.stop()
    # --- Cancel means it: the trainer aborted, exported nothing, registered nothing
    assert run.state == "cancelled" and run.cancel_outcome == "aborted", run.log_tail()
    assert any(e["event"] == "aborted" for e in run.events)
    assert not any(e["event"] == "done" for e in run.events)
    assert not (run.run_dir / "model.safetensors").exists()
    assert not any((gravity_env / "models").iterdir())
    assert "no model was registered" in rt.state_label.text()
    assert rt.progress.value() < 1000
    assert session.detector is None and rt.launch_btn.isEnabled()

    # --- Detect, then γ / NMS changes, while a 10 ms timer watches the event loop
    meter = LagMeter().start()
    run_detect(qtbot, det)
    for n in (5, 40, 15):  # one change per event-loop turn, as a reader's slider / spin box
        det.set_threshold(0.3 + 0.01 * n)
        qtbot.wait(20)
        det.box_spin.setValue(7 + n % 9)
        qtbot.wait(20)
    lag["detect"] = meter.stop()
    assert "detections in" in det.run_label.text()
    print(f"event-loop lag: {lag}")
    for what, m in lag.items():
        # never a stall in plugin code (the pre-fix freezes were 1.3-3.4 s of torch import on
        # the GUI thread); the overall bound leaves room for a machine loaded by other jobs
        assert m["in_plugin_code"] == 0, (what, m, m["where"])
        assert m["max_ms"] < LAG_MS, (what, m)


def write_dicom(path, image, center, width):
    """A minimal MONOCHROME2 16-bit mammogram DICOM with a window (pydicom)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.PhotometricInterpretation = "MG", "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = image.astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def test_napari_native_files_and_the_model_follows_the_task(
    make_napari_viewer, qtbot, gravity_env, image_folder
):
    import pandas as pd
    from napari.settings import get_settings

    from napari_gravity.plugin import _prefs

    viewer, w = open_gui(make_napari_viewer)
    det = w["Detect lesions"]
    prefs = get_settings().plugins.extension2reader
    assert prefs.get("*.tif") == "napari-gravity" and prefs.get("*.dcm") == "napari-gravity"
    # a preference the user set is never replaced
    get_settings().plugins.extension2reader = {**prefs, "*.png": "napari"}
    _prefs.claim_reader_preferences()
    assert get_settings().plugins.extension2reader["*.png"] == "napari"

    # File > Open with no plugin named: our reader, with the image's ground truth
    # (plugin=None is File > Open's call; without a preference it raises MultipleReaderError,
    # which the GUI turns into the "Choose reader" dialog)
    layers = viewer.open(str(image_folder[0]), plugin=None)
    assert [la.name for la in layers] == ["img0", "img0 ground truth"]
    # DICOM: the window/level stored in the file sets the contrast
    rng = np.random.default_rng(0)
    dcm = write_dicom(gravity_env / "mg.dcm", rng.integers(0, 4096, (64, 48)), 2000, 1001)
    (img_d,) = viewer.open(str(dcm), plugin=None)
    assert img_d.contrast_limits == pytest.approx([1499.5, 2499.5])

    # Save with no writer named: our CSV for the plugin's layers, napari's for any other
    gt = viewer.layers["img0 ground truth"]
    out = gravity_env / "gt_saved.csv"
    viewer.layers.selection.active = gt
    viewer.layers.save(str(out), selected=True)
    assert out.read_text().splitlines()[0].startswith("y,x,radius")
    assert len(pd.read_csv(out)) == len(gt.data)
    other = viewer.add_points(np.array([[1.0, 2.0]]), name="mine")
    viewer.layers.selection.active = other
    viewer.layers.save(str(gravity_env / "other.csv"), selected=True)
    assert (gravity_env / "other.csv").read_text().startswith("index,axis-0,axis-1")

    # the model follows the image: a fundus photograph gets default_ma (or says it is missing),
    # a mammogram default_mc, and the dock says which and why
    names = [det.model_combo.itemText(i) for i in range(det.model_combo.count())]
    if "default_mc" in names:
        viewer.open_sample("napari-gravity", "fundus")
        fundus = viewer.layers["synthetic fundus"]
        viewer.layers.selection.active = fundus
        text = det.choice_label.text()
        assert "synthetic fundus" in text and ("round field of view" in text or "colour" in text)
        if "default_ma" in names:
            assert det.model_combo.currentText() == "default_ma" and "default_ma" in text
        else:
            assert det.model_combo.currentText() == "default_mc"
            assert "default_ma is not installed: using default_mc" in text
        viewer.layers.selection.active = viewer.layers["img0"]
        assert det.model_combo.currentText() == "default_mc"
        assert "<b>img0</b>: <b>default_mc</b>" in det.choice_label.text()
        # the choice and the model's description are shown whole (their wrapped lines fit)
        for lbl in (det.choice_label, det.meta_label):
            qtbot.waitUntil(lambda lbl=lbl: lbl.height() >= lbl.heightForWidth(lbl.width()))
            assert lbl.heightForWidth(lbl.width()) > lbl.fontMetrics().lineSpacing()
    # once the user picks a model, the guess leaves it alone
    det.model_combo.setCurrentIndex(det.model_combo.count() - 1)
    det._on_user_choice()
    assert det.choose_model_for_image(viewer.layers["img0"]) is None
    assert det.choice_label.text() == "" and det.choice_label.minimumHeight() == 0  # no blank gap


def test_reopened_review_has_live_gamma_and_promote_writes_only_news(
    make_napari_viewer, qtbot, gravity_env, tiny_model, image_folder
):
    from napari_gravity.plugin import _api
    from napari_gravity.plugin._session import get_session
    from napari_gravity.plugin.sidecar import gt_csv_path, raw_path

    viewer, w = open_gui(make_napari_viewer)
    det, rev_w = w["Detect lesions"], w["Review"]
    (img,) = [la for la in viewer.open(str(image_folder[0]), plugin=None) if la.name == "img0"]
    viewer.layers.selection.active = img
    det.use_model_file(str(tiny_model))
    run_detect(qtbot, det)
    session = det.session
    layer = session.detections_layer(img, create=False)
    rev = session.review_for(layer)
    rev.set_status([0], "accepted")
    rev.flush()
    qtbot.waitUntil(lambda: raw_path(str(image_folder[0])).exists(), timeout=10_000)
    session._raw_writer.join(10)

    # Evaluate: the text gives exactly the TP / FP / FN drawn on the canvas (at γ, rejections
    # removed), and it is cleared when another image becomes the current one
    ev_w = w["Evaluate"]
    rev.set_status([1], "rejected")
    viewer.layers.selection.active = img
    assert ev_w.evaluate() is not None
    n = {k: len(viewer.layers[f"img0 {k}"].data) for k in ("TP", "FP", "FN")}
    assert f"{n['TP']} TP · {n['FP']} FP · {n['FN']} FN" in ev_w.result_label.text()
    g = session.params["threshold"]
    f = layer.features
    n_model = int(
        ((f["source"] == "model") & (f["status"] != "rejected") & (f["score"] >= g)).sum()
    )
    assert n["TP"] + n["FP"] == n_model
    other = viewer.add_image(np.zeros((32, 32), np.float32), name="other")
    viewer.layers.selection.active = other
    assert ev_w.report is None and "Press Evaluate for other" in ev_w.result_label.text()
    viewer.layers.remove(other)
    rev.set_status([1], "pending")

    # Promote: the first writes IMG.csv (with one backup); a second has nothing new to write
    gt_path = gt_csv_path(str(image_folder[0]))
    viewer.layers.selection.active = img
    n1, p1 = rev_w.promote()
    assert n1 == 1 and p1 == gt_path
    before = (gt_path.read_text(), sorted(gt_path.parent.glob("img0.csv.bak-*")))
    n2, p2 = rev_w.promote()
    assert n2 == 0 and p2 is None and "No new lesion point" in rev_w.saved_label.text()
    assert (gt_path.read_text(), sorted(gt_path.parent.glob("img0.csv.bak-*"))) == before
    assert len(before[1]) == 1

    # reopen in a fresh viewer: γ moves at once, from the cached raw output, without Detect
    viewer.close()
    viewer2, w2 = open_gui(make_napari_viewer, show=False)
    det2 = w2["Detect lesions"]
    img2 = next(la for la in viewer2.open(str(image_folder[0]), plugin=None) if la.name == "img0")
    viewer2.layers.selection.active = img2
    session2 = get_session(viewer2)
    assert session2.detector is None
    layer2 = session2.detections_layer(img2, create=False)
    handle = _api.load_detector(tiny_model)
    fresh = handle.detector.raw(np.asarray(img2.data, np.float32))
    from napari_gravity.data.masks import tissue_mask

    fresh.mask = tissue_mask(np.asarray(img2.data, np.float32), handle.metadata.get("task"))
    for g in (0.3, 0.6):
        det2.set_threshold(g)
        want = handle.detector.from_raw(fresh, threshold=g, nms_box=7.0, nms_iou=0.5)
        pending = layer2.features["status"] == "pending"
        got = np.sort(layer2.features["score"][pending].to_numpy())
        keep = np.ones(len(want.scores), bool)  # minus the one accepted point (deduplicated)
        keep[np.argmin(((want.points - layer2.data[~pending.to_numpy()][0]) ** 2).sum(1))] = False
        np.testing.assert_allclose(got, np.sort(want.scores[keep]), rtol=1e-5)
    assert "accepted" in set(layer2.features["status"])


@pytest.mark.skipif(not HAS_TINY, reason="training/configs/tiny.yaml not available")
def test_finetune_holds_out_images_and_compares_before_switching(
    make_napari_viewer, qtbot, gravity_env, tiny_model, image_folder4
):

    paths = image_folder4
    mark_reviewed(paths)
    _viewer, w = open_gui(make_napari_viewer)
    det, rev_w, rt = w["Detect lesions"], w["Review"], w["Retrain"]
    rev_w.set_folder(paths[0].parent)
    rev_w.step_image(+1)
    det.use_model_file(str(tiny_model))
    rt.config_edit.setText("tiny")
    rt.epochs_spin.setValue(1)
    run = rt.launch()
    assert run is not None, rt.state_label.text()
    # one of four reviewed images is held out: the trainer never sees it
    assert [i.path for i in rt.held_out] == [paths[3]]
    sets = {c.split("=", 1)[0]: c.split("=", 1)[1] for c in run.cmd if "_ids=" in c}
    assert sets == {"data.train_ids": '["img0", "img1", "img2"]', "data.val_ids": '["img3"]'}
    assert "1 held-out reviewed image(s) (img3.tif)" in rt.val_label.text()
    qtbot.waitUntil(lambda: run.state not in ("running", "cancelling"), timeout=170_000)
    assert run.state == "done", f"{run.error}\n{run.log_tail()}"
    # parent vs new on the same held-out image, before anything switches
    qtbot.waitUntil(lambda: rt.comparison is not None, timeout=60_000)
    cur, new = rt.comparison["current"], rt.comparison["new"]
    assert cur["n_images"] == new["n_images"] == 1 and cur["n_lesions"] == new["n_lesions"] > 0
    assert cur["threshold"] == pytest.approx(0.5)
    text = rt.compare_label.text()
    assert f"{100 * cur['aufroc']:.1f}%" in text and f"{100 * new['aufroc']:.1f}%" in text
    assert det.session.detector is None  # no Detect yet, and nothing switched
    assert det.selected_model() == ("model", str(tiny_model))
    rt.keep_btn.click()
    assert det.session.detector is None and det.selected_model() == ("model", str(tiny_model))
    assert not rt.use_btn.isVisibleTo(rt)
    from napari_gravity.core.registry import list_models

    assert "finetuned:v1" in [e.label for e in list_models(with_metadata=False)]
    # switching later, when the model had been picked for the image's task: the new one is used
    det.user_chose_model = False
    rt.use_new_model()
    qtbot.waitUntil(lambda: not det.busy, timeout=60_000)
    assert det.session.detector.path == str(rt.new_model)
    assert det.session.detector.name == "finetuned:v1"
