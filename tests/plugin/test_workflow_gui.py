"""End to end through the docks, under Xvfb: open → detect → threshold → review → save →
crash → reopen → evaluate → promote → fine-tune → the new model version is used.

Run: QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/pytest tests/plugin
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
HAS_TINY = (ROOT / "training" / "configs" / "tiny.yaml").exists()


def open_gui(make_napari_viewer):
    from napari_gravity.plugin.__main__ import DOCKS, arrange

    viewer = make_napari_viewer(show=True)
    docks = {n: viewer.window.add_plugin_dock_widget("napari-gravity", n) for n in DOCKS}
    arrange(viewer, docks, size=(1400, 1000))
    return viewer, {n: w for n, (_d, w) in docks.items()}


def detect_first_image(qtbot, w, folder, model):
    from napari_gravity.plugin._session import image_path_of

    det, rev_w = w["Detect lesions"], w["Review"]
    session = det.session
    assert len(rev_w.set_folder(folder)) == 2
    rev_w.step_image(+1)
    img = session.current_image_layer()
    assert image_path_of(img) == str(rev_w.queue[0])
    from napari_gravity.core.registry import default_model_path

    if default_model_path() is not None:  # the bundled model is preselected
        assert det.selected_model() == ("model", str(default_model_path()))
    else:  # no model at all: the classical candidates stand in
        assert det.selected_model() == ("classical", "Hessian-DoG")
    if model is not None:
        det.use_model_file(str(model))
    det.run_detection()
    qtbot.waitUntil(lambda: not det.busy, timeout=60_000)
    layer = session.detections_layer(img, create=False)
    assert layer is not None, det.run_label.text()
    return session, img, layer


def set_gamma_for(det, raw, n_candidates: int) -> float:
    """Put γ at the score of the n-th best raw candidate (slider resolution 1/1000)."""
    g = float(np.sort(raw.scores)[::-1][n_candidates])
    det.set_threshold(g)
    return det.thr_slider.value() / 1000


def test_detect_review_save_crash_reopen(
    make_napari_viewer, qtbot, gravity_env, tiny_model, image_folder
):
    from napari_gravity.plugin import _api
    from napari_gravity.plugin.sidecar import gt_csv_path, read_review, sidecar_path

    viewer, w = open_gui(make_napari_viewer)
    det, rev_w, ev_w = w["Detect lesions"], w["Review"], w["Evaluate"]
    session, img, layer = detect_first_image(qtbot, w, image_folder[0].parent, tiny_model)
    handle = session.detector
    assert handle.kind == "model" and handle.path == str(tiny_model)
    assert "resnet18" in det.meta_label.text()
    assert det.device_label.text().startswith("Device: ")
    raw = session.raw_cache[(img.unique_id, session.detector_key())]

    # --- γ / NMS live from the cached raw output: no network run, < 100 ms
    calls = []
    orig_raw = handle.detector.raw
    handle.detector.raw = lambda im: calls.append(1) or orig_raw(im)
    latencies = []
    for n in (10, 80, 30, 150, 60):
        g = set_gamma_for(det, raw, n)
        want = _api.detections(raw, g, det.box_spin.value(), det.iou_spin.value())
        assert len(layer.data) == len(want)
        np.testing.assert_allclose(np.sort(layer.features["score"]), np.sort(want.scores))
        latencies.append(det.last_update_ms)
    det.box_spin.setValue(15)
    want = _api.detections(raw, g, 15, det.iou_spin.value())
    assert len(layer.data) == len(want)
    latencies.append(det.last_update_ms)
    assert calls == []
    print(f"threshold/NMS update latency ms: {[round(v, 1) for v in latencies]}")
    assert np.median(latencies) < 100
    det.box_spin.setValue(7)
    # overlay of the moved gravity points (paper fig. 8)
    det.overlay_check.setChecked(True)
    overlay = viewer.layers[f"{img.name} gravity points"]
    moved, sc = raw.moved_points, raw.scores
    assert len(overlay.data) == int((sc >= min(0.05, g)).sum())
    assert not np.allclose(moved, raw.gravity_points)  # the regression head moved them
    det.overlay_check.setChecked(False)
    assert not overlay.visible
    viewer.layers.selection.active = layer
    n_det = len(layer.data)
    assert n_det >= 6
    assert set(layer.features["status"]) == {"pending"}
    assert set(layer.features["source"]) == {"model"}

    # --- evaluate against the image's ground truth (img0.csv)
    rep = ev_w.evaluate()
    assert rep is not None and 0.0 <= rep["aufroc"] <= 1.0
    counts = ev_w.show_outcomes()
    n_gt = len(session.gt_layer(img, create=False).data)
    tp = len(viewer.layers[f"{img.name} TP"].data)
    assert counts["TP"] == tp and counts["TP"] + counts["FN"] == n_gt
    assert counts["TP"] + counts["FP"] == n_det

    # --- review with the keyboard on the canvas
    viewer.layers.selection.active = layer
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    layer.selected_data = {0}
    qtbot.keyClick(canvas, "a")
    layer.selected_data = {1}
    qtbot.keyClick(canvas, "r")
    assert layer.features["status"][:2].tolist() == ["accepted", "rejected"]
    qtbot.keyClick(canvas, "n")
    (sel,) = layer.selected_data
    assert layer.features["status"][sel] == "pending"
    # γ moves keep what was judged
    g_before = det.thr_slider.value() / 1000
    set_gamma_for(det, raw, 5)
    set_gamma_for(det, raw, 60)
    st = layer.features["status"].tolist()
    assert st.count("accepted") == 1 and st.count("rejected") == 1
    assert det.thr_slider.value() / 1000 == pytest.approx(g_before, abs=0.002)
    # add a missed lesion, move a point, delete one (napari's own edit paths)
    layer.add([[128.0, 64.0]])
    assert layer.features.iloc[-1].tolist() == [1.0, "user", "added"]
    moved = layer.data.copy()
    moved[2] += (3.0, -2.0)
    layer.data = moved
    before_delete = (layer.data.copy(), layer.features.copy())
    layer.selected_data = {3}
    layer.remove_selected()
    assert len(layer.data) == len(before_delete[0]) - 1
    qtbot.keyClick(canvas, "u")  # undo the delete
    np.testing.assert_allclose(layer.data, before_delete[0])
    assert layer.features.to_dict("list") == before_delete[1].to_dict("list")
    rev = session.review_for(layer)
    rev_w.undo_btn.click()  # undo the move
    np.testing.assert_allclose(layer.data[2], moved[2] - (3.0, -2.0))
    layer.data = moved  # and redo it by hand
    # accept all ≥ γ: every pending point left is above γ
    rev_w.accept_all_btn.click()
    assert "pending" not in set(layer.features["status"])
    assert rev.status == "done"

    # --- autosave (debounced, atomic) reaches the sidecar
    side = sidecar_path(img.metadata["path"])

    def saved_matches():
        if not side.exists():
            return False
        r = read_review(side)
        return len(r.points) == len(layer.data) and np.allclose(r.points, layer.data)

    qtbot.waitUntil(saved_matches, timeout=5000)
    qtbot.waitUntil(lambda: rev_w.queue_list.item(0).text() == "● img0.tif  (done)", timeout=2000)
    assert rev_w.queue_list.item(1).text() == "○ img1.tif  (unreviewed)"
    doc = json.loads(side.read_text())
    assert doc["review_status"] == "done" and doc["detector"]["path"] == str(tiny_model)

    # --- promote accepted to ground truth: IMG.csv rewritten, the old one backed up
    gt_path = gt_csv_path(img.metadata["path"])
    old_gt = gt_path.read_text()
    n_lesion = int(layer.features["status"].isin(["accepted", "added"]).sum())
    n_new, path = rev_w.promote()
    assert path == gt_path and 0 < n_new <= n_lesion
    backups = list(gt_path.parent.glob(gt_path.name + ".bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == old_gt
    assert len(_api.read_points_csv(gt_path).points) == n_gt + n_new
    # folder evaluation: only img0 has both a review sidecar and a ground truth
    ev_w.scope.setCurrentIndex(1)
    rep = ev_w.evaluate()
    assert rep is not None and "over 1 image(s)" in ev_w.result_label.text()

    # --- crash: drop the viewer without any explicit save, then reopen from disk
    final_pts, final_feats = layer.data.copy(), layer.features.copy()
    session.reviews.clear()  # no flush on close: only what autosave wrote survives
    viewer.close()
    viewer2 = make_napari_viewer(show=False)
    layers = viewer2.open(str(image_folder[0]), plugin="napari-gravity")
    names = [la.name for la in layers]
    assert names == ["img0", "img0 ground truth", "img0 detections"]
    det2 = viewer2.layers["img0 detections"]
    np.testing.assert_allclose(det2.data, final_pts)
    assert det2.features.to_dict("list") == final_feats.to_dict("list")
    assert len(viewer2.layers["img0 ground truth"].data) == n_gt + n_new
    from napari_gravity.plugin._session import get_session

    # γ / NMS of the review come back too
    assert get_session(viewer2).params == pytest.approx(
        {"threshold": g, "nms_box": 7.0, "nms_iou": 0.5}
    )


@pytest.mark.skipif(not HAS_TINY, reason="training/configs/tiny.yaml (trainer) not available yet")
def test_finetune_registers_and_uses_new_model(
    make_napari_viewer, qtbot, gravity_env, tiny_model, image_folder
):
    from napari_gravity.plugin import _api
    from napari_gravity.plugin._session import image_path_of

    _viewer, w = open_gui(make_napari_viewer)
    det, rev_w, rt = w["Detect lesions"], w["Review"], w["Retrain"]
    session, img, layer = detect_first_image(qtbot, w, image_folder[0].parent, tiny_model)
    raw = session.raw_cache[(img.unique_id, session.detector_key())]
    set_gamma_for(det, raw, 40)
    rev = session.review_for(layer)
    rev.set_status([0, 1], "rejected")
    layer.add([[100.0, 100.0]])
    rev_w.accept_all_btn.click()
    imgs = rt.refresh()
    assert [i.path for i in imgs] == [image_folder[0]]
    # training labels: the image's ground truth plus the accepted / added points not on it
    gt = _api.read_points_csv(image_folder[0].with_suffix(".csv")).points
    lesions = layer.data[layer.features["status"].isin(["accepted", "added"]).to_numpy()]
    d = np.sqrt(((lesions[:, None] - gt[None]) ** 2).sum(-1)).min(1)
    n_train = len(gt) + int((d > 3.0).sum())
    assert len(imgs[0].points) == n_train
    assert f"{n_train}</b> lesion points" in rt.summary_label.text()

    assert rt.config_edit.text() == "finetune"  # the trainer's GUI fine-tuning recipe
    rt.config_edit.setText("tiny")  # seconds on a CPU
    rt.epochs_spin.setValue(1)
    rt.name_edit.setText("mine")
    run = rt.launch()
    assert run is not None and "--init" in run.cmd
    assert run.cmd[run.cmd.index("--init") + 1] == str(tiny_model)
    # one reviewed image: nothing to hold out, so no validation figure and the parent's γ
    assert "No independent validation" in rt.val_label.text()
    qtbot.waitUntil(lambda: run.state not in ("running", "cancelling"), timeout=170_000)
    assert run.state == "done", f"{run.error}\n{run.log_tail()}"
    assert rt.progress.value() == 1000
    assert "AUFROC" not in rt.log.toPlainText() and "AUFROC" not in rt.state_label.text()
    # the trainer registered version 1 of "mine" (listed as mine:v1 everywhere)
    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.core.registry import list_models

    labels = [e.label for e in list_models(with_metadata=False)]
    assert [label for label in labels if label.startswith("mine")] == ["mine:v1"]
    assert rt.new_model == gravity_env / "models" / "mine" / "v001.safetensors"
    assert "mine:v1" in rt.state_label.text()
    assert read_model_metadata(rt.new_model)["threshold"] == pytest.approx(0.5)
    log = run.log_path.read_text()
    assert "initialised from model file" in log and "from scratch" not in log
    # nothing switches until the user chooses
    assert session.detector.path == str(tiny_model)
    assert rt.use_btn.isVisibleTo(rt) and rt.keep_btn.isVisibleTo(rt)
    rt.use_btn.click()
    qtbot.waitUntil(lambda: not det.busy, timeout=60_000)
    assert session.detector.path == str(rt.new_model)
    assert session.detector.name == "mine:v1"
    assert det.model_combo.currentData() == ("model", str(rt.new_model))
    qtbot.waitUntil(lambda: not det.busy, timeout=60_000)
    img1 = session.current_image_layer()
    assert image_path_of(img1) == str(image_folder[1])
    assert (img1.unique_id, session.detector_key()) in session.raw_cache
    assert len(session.detections_layer(img1, create=False).data) > 0
    meta = read_model_metadata(rt.new_model)
    parent = meta["provenance"]["parent"]
    assert Path(parent["path"] if isinstance(parent, dict) else parent).name == tiny_model.name
    assert "from tiny.safetensors" in det.meta_label.text()


def test_failed_training_leaves_everything_intact(
    make_napari_viewer, qtbot, gravity_env, tiny_model, image_folder
):
    _viewer, w = open_gui(make_napari_viewer)
    _det, rev_w, rt = w["Detect lesions"], w["Review"], w["Retrain"]
    session, _img, layer = detect_first_image(qtbot, w, image_folder[0].parent, tiny_model)
    rev_w.accept_all_btn.click()
    before = (layer.data.copy(), layer.features.copy(), session.detector)
    rt.config_edit.setText(str(gravity_env / "no-such-config.yaml"))
    run = rt.launch()
    assert run is not None
    qtbot.waitUntil(lambda: run.state not in ("running", "cancelling"), timeout=60_000)
    assert run.state == "failed"
    assert "Training failed" in rt.state_label.text()
    assert "no-such-config" in run.error + run.log_tail()
    assert rt.launch_btn.isEnabled() and not rt.cancel_btn.isEnabled()
    assert session.detector is before[2]
    np.testing.assert_allclose(layer.data, before[0])
    assert layer.features.equals(before[1])
    assert not any((gravity_env / "models").iterdir())
