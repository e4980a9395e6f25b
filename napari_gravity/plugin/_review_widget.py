"""The Review dock: accept / reject / add / undo, promote to ground truth, folder queue."""

from __future__ import annotations

import time
from pathlib import Path

from napari.layers import Image
from qtpy.QtWidgets import QFileDialog, QListWidget, QListWidgetItem

from . import _style, _ui
from . import review as rv
from ._session import Dock, image_path_of, role_of
from .datasets import folder_images, order_queue
from .sidecar import read_status, sidecar_path

STATUS_MARK = {"unreviewed": "○", "in_progress": "◐", "done": "●"}


class ReviewWidget(Dock):
    """Review the detections of the current image (see docs/plugin.md)."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.queue: list[Path] = []
        self.queue_pos = -1
        self._folder: Path | None = None

        def act(fn):  # a review action on the current detections layer
            return lambda: self._act(fn)

        self.counts_label = _ui.label("No detections yet.")
        self.saved_label = _ui.label(style=_ui.MUTED)
        self.undo_btn = _ui.button("Undo  [u]", act(lambda r: r.undo()))
        self.accept_all_btn = _ui.button(
            "Accept all ≥ γ", act(lambda r: r.accept_above(self.session.params["threshold"]))
        )
        self.scores_check = _ui.checkbox(
            "Show scores", self.session.set_show_scores, tip="Write each score next to its ring"
        )
        self.uncertainty_check = _ui.checkbox(
            "Most uncertain first", lambda _: self.set_folder(self._folder)
        )
        self.queue_list = QListWidget()
        self.queue_list.setMaximumHeight(150)
        add_tip = "Switch the detections layer to 'add points' (source: user)"
        _ui.stack(
            self,
            _ui.group(
                "Review",
                self.counts_label,
                [
                    _ui.button("Accept  [a]", act(lambda r: r.accept_selected())),
                    _ui.button("Reject  [r]", act(lambda r: r.reject_selected())),
                ],
                [
                    _ui.button("Next pending  [n]", act(lambda r: r.select_next_pending())),
                    self.undo_btn,
                ],
                [
                    _ui.button("Add missed lesion", act(self._add_mode), tip=add_tip),
                    _ui.button("Delete selected", act(lambda r: r.layer.remove_selected())),
                ],
                [self.accept_all_btn, _ui.button("Save now", act(lambda r: r.save_now()))],
                _ui.button("Promote accepted to ground truth", self.promote, bold=True),
                self.scores_check,
                self.saved_label,
            ),
            _ui.group(
                "Image queue",
                [_ui.button("Open folder…", self._choose_folder), self.uncertainty_check],
                self.queue_list,
                [
                    _ui.button("◀ Previous image", lambda: self.step_image(-1)),
                    _ui.button("Next image ▶", lambda: self.step_image(+1)),
                ],
            ),
        )
        self.queue_list.itemDoubleClicked.connect(
            lambda item: self.open_queue_item(self.queue_list.row(item))
        )
        self.session.review_changed.connect(self._refresh)
        self.session.saved.connect(self._on_saved)
        self.session.step_image.connect(self.step_image)
        self.viewer.layers.selection.events.active.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------------ actions
    def _act(self, fn):
        rev = self.session.current_review()
        if rev is None:
            self.counts_label.setText("No detections layer: run Detect first.")
            return None
        out = fn(rev)
        self._refresh()
        return out

    def _add_mode(self, rev):
        self.viewer.layers.selection.active = rev.layer
        rev.layer.mode = "add"

    def promote(self):
        img = self.session.current_image_layer()
        if img is None:
            return None
        n, path = self.session.promote_to_gt(img)
        if n == 0:
            self.saved_label.setText(
                "No new lesion point to promote: the ground truth is unchanged."
            )
        else:
            where = f" → {path.name}" if path else ""
            self.saved_label.setText(f"{n} new ground-truth points{where}")
        return n, path

    # ------------------------------------------------------------------ display
    def _on_saved(self, path: str):
        self.saved_label.setText(f"autosaved at {time.strftime('%H:%M:%S')}")
        self.saved_label.setToolTip(path)
        for i, p in enumerate(self.queue):  # only the image that was saved
            if str(sidecar_path(p)) == str(path):
                self._refresh_queue_marks([i])

    def _refresh(self, *_):
        rev = self.session.current_review()
        if rev is None or rev.layer is None:
            self.counts_label.setText("No detections yet: run Detect, or add points.")
            return
        c = rv.status_counts(rev.features)
        self.counts_label.setText(
            f"<b>{rev.layer.name}</b> — {rev.status.replace('_', ' ')}<br>"
            + " · ".join(
                f"<span style='color:{_style.PALETTE[k]}'>○ {c[k]} {k}</span>"
                for k in ("pending", "accepted", "rejected", "added")
            )
        )
        self.undo_btn.setEnabled(len(rev.undo_stack) > 0)
        if not rev.image_path:
            self.saved_label.setText(
                "<span style='color:#ff9a3c'>Not autosaved: this image has no file. "
                "Save the image, then open it from disk.</span>"
            )

    # ------------------------------------------------------------------ folder queue
    def _choose_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to review")
        if folder:
            self.set_folder(folder)

    def set_folder(self, folder: str | Path | None) -> list[Path]:
        if folder is None:
            return []
        self._folder = Path(folder)
        self.queue = order_queue(folder_images(folder), self.uncertainty_check.isChecked())
        self.session.queue = [str(p) for p in self.queue]
        self.queue_list.clear()
        for p in self.queue:
            self.queue_list.addItem(QListWidgetItem(p.name))
        self._refresh_queue_marks()
        return self.queue

    def _refresh_queue_marks(self, rows=None):
        for i in range(len(self.queue)) if rows is None else rows:
            p = self.queue[i]
            item = self.queue_list.item(i)
            if item is not None:
                st = read_status(p)
                item.setText(f"{STATUS_MARK.get(st, '○')} {p.name}  ({st.replace('_', ' ')})")

    def open_queue_item(self, pos: int):
        if not (0 <= pos < len(self.queue)):
            return None
        self.session.flush_reviews()
        path = self.queue[pos]
        self.queue_pos = pos
        self.queue_list.setCurrentRow(pos)
        for layer in list(self.viewer.layers):
            if role_of(layer) in ("image", "detections", "gt", "overlay", "eval"):
                self.viewer.layers.remove(layer)
        layers = self.viewer.open(str(path), plugin="napari-gravity")
        img = [la for la in layers if isinstance(la, Image)]
        if img:
            self.viewer.layers.selection.active = img[0]
        return path

    def step_image(self, delta: int):
        if not self.queue:
            return None
        cur = self.session.current_image_layer()
        if cur is not None and image_path_of(cur):
            paths = [str(p) for p in self.queue]
            if image_path_of(cur) in paths:
                self.queue_pos = paths.index(image_path_of(cur))
        pos = min(max(self.queue_pos + delta, 0), len(self.queue) - 1)
        if self.queue_pos < 0:
            pos = 0
        return self.open_queue_item(pos)
