"""Screenshots of the two bundled models picked by the Detect dock on the shipped samples.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" \\
        .venv/bin/python docs/screenshots/make_model_shots.py

Opens the ``mammogram`` and ``retina`` samples in turn, lets the Detect dock choose the model
for the image (no model is named), detects at the model's stored threshold, zooms on the
densest ground-truth cluster and saves ``10_default_mc.png`` / ``11_default_ma.png``, printing
what the dock says and the TP / FP / FN counts against the sample's ground truth.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_screenshots import densest, pump, shot, wait  # noqa: E402


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gravity-model-shots-"))
    for var in ("GRAVITY_SAMPLES", "GRAVITY_MODELS", "GRAVITY_RUNS"):
        os.environ[var] = str(tmp / var.lower())
    os.environ["GRAVITY_NO_PROGRESS"] = "1"
    import napari

    from napari_gravity.evaluation.froc import match_image
    from napari_gravity.plugin.__main__ import open_viewer

    viewer, docks = open_viewer(None, show=True)
    det = docks["Detect lesions"][1]
    session = det.session
    for sample, name in (("mammogram", "10_default_mc"), ("retina", "11_default_ma")):
        viewer.layers.clear()
        viewer.open_sample("napari-gravity", sample)
        pump(1.0)
        img = session.current_image_layer()
        det.choose_model_for_image(img)
        pump(0.3)
        det.run_detection()
        wait(lambda: not det.busy, 900)
        pump(0.5)
        layer = session.detections_layer(img, create=False)
        gt_layer = session.gt_layer(img, create=False)
        gt = np.asarray(gt_layer.data) if gt_layer is not None else np.zeros((0, 2))
        pts = np.asarray(layer.data)
        radii = (
            gt_layer.features["radius"].to_numpy()
            if gt_layer is not None and "radius" in gt_layer.features
            else np.full(len(gt), 3.0)
        )
        m = match_image(pts, np.ones(len(pts)), gt, radii)
        tp = m.n_tp
        print(
            f"{sample}: {det.choice_label.text()} | {len(pts)} detections, "
            f"TP {tp}, FP {len(pts) - tp}, FN {len(gt) - tp} of {len(gt)} lesions"
        )
        viewer.reset_view()
        if len(gt):
            viewer.camera.center = tuple(densest(gt, radius=60.0))
            viewer.camera.zoom = viewer.camera.zoom * 2.5
        shot(viewer, name)
    viewer.close()
    napari.Viewer.close_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
