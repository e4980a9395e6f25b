"""The Evaluate dock: FROC of the detections against the ground truth, TP / FP / FN on canvas."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QComboBox

from . import _api, _ui, datasets
from ._session import ROLE_KEY, Dock, image_path_of


def layer_detections(session, image_layer) -> tuple[np.ndarray, np.ndarray]:
    """Model detections of an image for FROC: the whole cached raw output after NMS at
    γ = 0 when available (a full curve), else the model points of the detections layer."""
    raw = session.raw_for(image_layer)
    if raw is not None:
        d = _api.detections(raw, 0.0, session.params["nms_box"], session.params["nms_iou"])
        return d.points, d.scores
    det = session.detections_layer(image_layer, create=False)
    if det is None:
        return np.zeros((0, 2)), np.zeros(0)
    return datasets.model_points(det.data, det.features)


def layer_ground_truth(session, image_layer, default_radius=3.0):
    gt = session.gt_layer(image_layer, create=False)
    if gt is None:
        return None
    pts = np.asarray(gt.data, float).reshape(-1, 2)
    f = gt.features if len(gt.features) == len(pts) else pd.DataFrame(index=range(len(pts)))
    radii = f["radius"].to_numpy(float) if "radius" in f else np.full(len(pts), default_radius)
    return _api.PointTable(pts, radii, f).lesions(default_radius)


class EvaluateWidget(Dock):
    """FROC / sensitivity at FPpI in a dock (see docs/plugin.md)."""

    def __init__(self, napari_viewer):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(napari_viewer)
        self.report: dict | None = None
        self._evaluated: str | None = None  # the image the shown result belongs to
        self.scope = QComboBox()
        self.scope.addItems(["Current image", "Folder queue"])
        self.run_btn = _ui.button("Evaluate", self.evaluate, bold=True)
        self.show_check = _ui.checkbox("Show TP / FP / FN on the image", checked=True)
        self.result_label = _ui.label()
        self.figure = Figure(figsize=(3.6, 2.8), dpi=90, facecolor="#262930")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(240)
        _ui.stack(
            self,
            [self.scope, self.run_btn],
            self.show_check,
            self.canvas,
            self.result_label,
        )
        self.viewer.layers.selection.events.active.connect(self._on_active)
        self.viewer.layers.events.removed.connect(self._on_active)
        self.session.detections_updated.connect(self._on_detections_changed)
        self.clear()

    def _image_key(self, img) -> str | None:
        return None if img is None else (image_path_of(img) or img.name)

    def clear(self, text: str = "Needs detections and a ground-truth layer.") -> None:
        self.report = None
        self._evaluated = None
        self._plot(None)
        self.result_label.setText(text)

    def _on_active(self, *_):
        """Another image: the shown result is not about it any more."""
        if self._evaluated is None or self.scope.currentIndex() != 0:
            return
        img = self.session.current_image_layer()
        if self._image_key(img) != self._evaluated:
            name = img.name if img is not None else "this image"
            self.clear(f"Press Evaluate for {name}.")

    def _on_detections_changed(self, layer, _ms):
        img = self.session.image_layer_for(layer)
        if self._evaluated is not None and self._image_key(img) == self._evaluated:
            self.result_label.setText(
                self.result_label.text().split("<br><i>")[0]
                + "<br><i>γ / NMS changed since: press Evaluate again.</i>"
            )

    # ------------------------------------------------------------------ compute
    def evaluate(self) -> dict | None:
        try:
            if self.scope.currentIndex() == 0:
                items = self._current_items()
            else:
                items = datasets.evaluation_items(self.session.queue)
            if not items:
                self.result_label.setText(
                    "Nothing to evaluate: needs detections and ground truth "
                    "(Promote accepted to ground truth, or open an image with IMG.csv)."
                )
                return None
            rep, _res = _api.evaluate(items)
        except ValueError as exc:
            self.result_label.setText(f"Evaluation failed: {exc}")
            return None
        self.report = rep
        sens = rep["sensitivity_at"]
        sens_txt = " · ".join(f"{k}: {100 * v:.0f}%" for k, v in sens.items())
        text = (
            f"<b>AUFROC<sub>{rep['max_fppi']:g}</sub> {100 * rep['aufroc']:.1f}%</b> over "
            f"{len(items)} image(s): the model's detections at every score (before review)"
            f"<br>sensitivity at FPpI {sens_txt}"
        )
        point = None
        if self.scope.currentIndex() == 0:
            img = self.session.current_image_layer()
            counts = self.show_outcomes(draw=self.show_check.isChecked())
            if counts:
                g = self.session.params["threshold"]
                n_gt = counts["TP"] + counts["FN"]
                text += (
                    f"<br>At γ {g:.2f}, your rejections removed: <b>{counts['TP']} TP · "
                    f"{counts['FP']} FP · {counts['FN']} FN</b>"
                    + (" (marked on the image)" if self.show_check.isChecked() else "")
                )
                point = (counts["FP"], counts["TP"] / n_gt if n_gt else 0.0)
            self._evaluated = self._image_key(img)
        else:
            self._evaluated = "folder"
        self._plot(rep, point)
        self.result_label.setText(text)
        return rep

    def _current_items(self) -> dict[str, tuple]:
        img = self.session.current_image_layer()
        if img is None:
            return {}
        gt = layer_ground_truth(self.session, img)
        if gt is None:
            return {}
        return {img.name: (*layer_detections(self.session, img), *gt)}

    # ------------------------------------------------------------------ display
    def _plot(self, rep: dict | None, point=None) -> None:
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        ax.set_facecolor("#262930")
        for spine in ax.spines.values():
            spine.set_color("#888")
        ax.tick_params(colors="#ccc", labelsize=8)
        ax.set_xlabel("false positives per image", color="#ccc", fontsize=9)
        ax.set_ylabel("sensitivity", color="#ccc", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.25)
        if rep is not None:
            g = float(rep["max_fppi"])
            x = np.array([np.nan if v is None else v for v in rep["fppi"]], float)
            y = np.array([np.nan if v is None else v for v in rep["tpr"]], float)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            if len(x) and x[-1] < g:
                x, y = np.r_[x, g], np.r_[y, y[-1]]
            ax.plot(x, y, color="#ffb000", lw=1.8)
            if point is not None:  # the reviewed operating point shown on the canvas
                ax.plot(*point, "o", color="#56b4e9", ms=6, label="at γ, reviewed")
                ax.legend(loc="lower right", fontsize=7, facecolor="#262930", labelcolor="#ccc")
            ax.set_xlim(0, g)
            ax.set_title(f"FROC · AUFROC {100 * rep['aufroc']:.1f}%", color="#eee", fontsize=10)
        else:
            ax.set_xlim(0, 10)
            ax.set_title("FROC", color="#eee", fontsize=10)
        fig.tight_layout()
        self.canvas.draw_idle()

    def show_outcomes(self, draw: bool = True) -> dict[str, int]:
        """TP / FP (model points at the current γ, rejected ones removed) and FN, drawn as
        layers over the image when ``draw``."""
        img = self.session.current_image_layer()
        det = self.session.detections_layer(img, create=False)
        gt = layer_ground_truth(self.session, img)
        if det is None or gt is None:
            return {}
        pts, scores = datasets.model_points(
            det.data, det.features, self.session.params["threshold"]
        )
        labels, hit = _api.match(pts, scores, gt[0], gt[1])
        groups = {
            "TP": (pts[labels == 1], "#009e73", "square"),
            "FP": (pts[(labels == 0) | (labels == 2)], "#d55e00", "x"),
            "FN": (gt[0][~hit], "#e69f00", "diamond"),
        }
        counts = {name: len(p) for name, (p, _c, _s) in groups.items()}
        if not draw:
            return counts
        path = image_path_of(img)
        for name, (p, color, symbol) in groups.items():
            lname = f"{img.name} {name}"
            if lname in self.viewer.layers:
                self.viewer.layers[lname].data = p
            else:
                self.viewer.add_points(
                    p,
                    name=lname,
                    size=17,
                    symbol=symbol,
                    face_color="transparent",
                    border_color=color,
                    border_width=0.07,
                    border_width_is_relative=True,
                    metadata={ROLE_KEY: {"role": "eval", "image_path": path}},
                )
        if img is not None:
            self.viewer.layers.selection.active = det
        return counts
