"""Per-viewer state shared by the plugin's docks, and the review controller of a layer.

A :class:`GravitySession` per viewer holds the current detector, the cached raw outputs
(one per image layer and detector, so γ / NMS changes never re-run the network), the
live parameters and one :class:`LayerReview` per detections layer. ``LayerReview`` keeps
the undo stack (status changes and napari edits alike) and autosaves the layer to the
image's sidecar ``IMG.review.json`` (debounced, atomic).
"""

from __future__ import annotations

import shutil
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
from psygnal import Signal
from qtpy.QtCore import QTimer

from . import _style
from . import review as rv
from .sidecar import Review, gt_csv_path, image_stem, read_review, sidecar_path, write_review

ROLE_KEY = "gravity"
AUTOSAVE_MS = 300
POINT_SIZE = _style.POINT_SIZE
NEXT_VIEW_PX = 96  # "next pending" shows at least this many image pixels around the point
DOCK_WIDTH = 430  # px: the docks never squeeze the canvas


def unwrap(obj):
    """The real object behind napari's ``PublicOnlyProxy`` (plugins get proxies)."""
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def role_of(layer) -> str | None:
    meta = getattr(layer, "metadata", None) or {}
    return (meta.get(ROLE_KEY) or {}).get("role")


def image_path_of(layer) -> str | None:
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(ROLE_KEY) or {}
    return info.get("image_path") or meta.get("path")


def detections_layer_kwargs(image_name: str, image_path: str | None, size: float = POINT_SIZE):
    return {
        "name": f"{image_name} detections",
        "metadata": {ROLE_KEY: {"role": "detections", "image_path": image_path}},
        **_style.marker_kwargs(),
        "size": size,
        "symbol": "disc",  # with a transparent face: a clean circle outline at every zoom
        "features": rv.make_features(np.zeros(0)),
        "feature_defaults": dict(rv.USER_DEFAULTS),
    }


def gt_layer_kwargs(image_name: str, image_path: str | None, size: float = POINT_SIZE):
    return {
        "name": f"{image_name} ground truth",
        "metadata": {ROLE_KEY: {"role": "gt", "image_path": image_path}},
        **_style.marker_kwargs(),
        "size": size * 1.5,
        "border_color": _style.PALETTE["gt"],
        "border_width": 0.08,
        "symbol": "square",
    }


def raw_path(image_path: str) -> Path:
    """``IMG.raw.npz``: the cached raw output of the model that made the review."""
    stem = image_stem(image_path)
    return stem.with_name(stem.name + ".raw.npz")


def backup_file(path: Path) -> Path | None:
    """Copy an existing file to ``NAME.bak-YYYYmmdd-HHMMSS[-n]`` (never overwriting one)."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    shutil.copy2(path, dest)
    return dest


class LayerReview:
    """Review controller of one detections Points layer (undo + autosave)."""

    def __init__(self, layer, session: GravitySession, image_path: str | None, image_shape=None):
        layer = unwrap(layer)
        self._layer_ref = weakref.ref(layer)
        self.session = session
        self.image_path = image_path
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.undo_stack = rv.UndoStack()
        self.touched = False
        self.last_saved: float | None = None
        self._busy = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.save_now)
        layer.feature_defaults = dict(rv.USER_DEFAULTS)
        layer.events.data.connect(self._on_data)
        self.recolor()

    @property
    def layer(self):
        return self._layer_ref()

    # ------------------------------------------------------------------ napari edits
    def _on_data(self, event) -> None:
        if self._busy or self.layer is None:
            return
        action = str(getattr(event, "action", ""))
        if action in ("adding", "removing", "changing"):
            # napari emits these *before* the change: the state to go back to
            old = getattr(event, "value", None)
            data = self.layer.data if old is None else old
            feats = self.layer.features
            if len(feats) != len(data):
                feats = rv.clean_features(feats, len(data))
            self.undo_stack.push(data, feats, action.replace("ing", ""))
            self._n_before = len(data)
        elif action in ("added", "removed", "changed"):
            n_before = getattr(self, "_n_before", len(self.layer.data))
            if action == "added" and len(self.layer.data) > n_before:
                # napari copies the selected point's features into a new point: a point
                # the user adds is always (score 1, source user, status added)
                feats = self.layer.features.copy()
                for col, val in rv.USER_DEFAULTS.items():
                    feats.loc[feats.index[n_before:], col] = val
                self._busy = True
                try:
                    self.layer.features = rv.clean_features(feats, len(self.layer.data))
                finally:
                    self._busy = False
            self.touched = True
            self.recolor()
            self.changed()

    # ------------------------------------------------------------------ state
    @property
    def features(self) -> pd.DataFrame:
        return rv.clean_features(self.layer.features, len(self.layer.data))

    def set_content(self, data, features, *, label: str | None = None, touched=True) -> None:
        """Replace the layer's points and features (undoable when ``label`` is given)."""
        layer = self.layer
        if label is not None:
            self.undo_stack.push(layer.data, self.features, label)
        data = np.asarray(data, dtype=float).reshape(-1, 2)
        self._busy = True
        try:
            selected = set(layer.selected_data)
            layer.data = data
            layer.features = rv.clean_features(features, len(data))
            layer.selected_data = {i for i in selected if i < len(data)}
            self.recolor()
        finally:
            self._busy = False
        if touched:
            self.touched = True
        refit = getattr(self.session, "schedule_marker_fit", None)
        if refit is not None:
            refit()  # new points get the zoom-aware size too
        self.changed()

    def recolor(self) -> None:
        layer = self.layer
        if layer is None or len(layer.data) == 0:
            return
        feats = self.features
        was, self._busy = self._busy, True
        try:
            if len(layer.features) != len(feats) or list(layer.features.columns) != list(
                feats.columns
            ):
                layer.features = feats
            layer.face_color = "transparent"
            layer.border_color = _style.border_colors(feats)
        finally:
            self._busy = was

    def changed(self) -> None:
        """Something changed: tell the docks and schedule the autosave."""
        self.session.review_changed.emit(self)
        self._timer.start()

    # ------------------------------------------------------------------ review actions
    def set_status(self, indices, status: str) -> int:
        idx = sorted(int(i) for i in indices if 0 <= int(i) < len(self.layer.data))
        if not idx:
            return 0
        feats = self.features
        new = feats.copy()
        for i in idx:
            s = status
            if status == "accepted" and feats.at[i, "source"] == "user":
                s = "added"
            new.at[i, "status"] = s
        self.set_content(self.layer.data, new, label=status)
        return len(idx)

    def accept_selected(self) -> int:
        return self.set_status(self.layer.selected_data, "accepted")

    def reject_selected(self) -> int:
        return self.set_status(self.layer.selected_data, "rejected")

    def accept_above(self, threshold: float) -> int:
        f = self.features
        idx = np.flatnonzero(
            (f["status"] == "pending").to_numpy() & (f["score"].to_numpy(float) >= threshold)
        )
        return self.set_status(idx, "accepted")

    def select_next_pending(self, viewer=None) -> int | None:
        sel = sorted(self.layer.selected_data)
        i = rv.next_pending(self.features, sel[0] if sel else None)
        if i is None:
            return None
        self.layer.selected_data = {i}
        if viewer is not None:
            y, x = self.layer.data[i]
            viewer.camera.center = (y, x)
            canvas = getattr(getattr(viewer, "canvas", None), "size", None) or (600, 600)
            zoom = min(canvas) / NEXT_VIEW_PX
            if viewer.camera.zoom < zoom:
                viewer.camera.zoom = zoom
        return i

    def undo(self) -> str | None:
        snap = self.undo_stack.pop()
        if snap is None:
            return None
        self.set_content(snap.data, snap.features, label=None)
        return snap.label

    def merge(self, points, scores, dedupe_radius: float) -> None:
        """New detections from γ / NMS: replace the pending model points (not undoable,
        not a review action: nothing the user judged is touched)."""
        pts, feats = rv.merge_detections(
            self.layer.data, self.features, points, scores, dedupe_radius
        )
        self.set_content(pts, feats, label=None, touched=self.touched)

    # ------------------------------------------------------------------ persistence
    @property
    def status(self) -> str:
        return rv.image_review_status(self.features, self.touched)

    def save_now(self) -> Path | None:
        self._timer.stop()
        layer = self.layer
        if layer is None or not self.image_path:
            return None
        path = sidecar_path(self.image_path)
        write_review(
            path,
            Review(
                image=Path(self.image_path).name,
                points=np.asarray(layer.data, dtype=float),
                features=self.features,
                status=self.status,
                image_shape=self.image_shape,
                params=dict(self.session.params),
                detector=self.session.detector_info(),
            ),
        )
        self.last_saved = time.time()
        self.session.saved.emit(str(path))
        return path

    def flush(self) -> None:
        if self._timer.isActive():
            self.save_now()


class GravitySession:
    """State of the plugin for one viewer (see module docstring)."""

    review_changed = Signal(object)
    detector_changed = Signal(object)
    saved = Signal(str)
    detections_updated = Signal(object, float)  # layer, milliseconds
    retrained = Signal(str)  # path of the new model version
    params_changed = Signal(dict)  # γ / NMS restored from a sidecar

    def __init__(self, viewer) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self.detector = None  # _api.DetectorHandle
        self.params = {"threshold": 0.5, "nms_box": 7.0, "nms_iou": 0.5}
        self.raw_cache: dict[tuple, object] = {}  # (image layer unique_id, detector key)
        self.reviews: dict = {}  # detections layer unique_id -> LayerReview
        self.queue: list[str] = []
        self.widgets: dict[str, object] = {}  # docks by role, so they can hand work on
        self.show_scores = False  # score text next to each detection
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        self._zoom_timer = QTimer()
        self._zoom_timer.setSingleShot(True)
        self._zoom_timer.setInterval(60)
        self._zoom_timer.timeout.connect(self.fit_marker_sizes)
        viewer.camera.events.zoom.connect(lambda _e=None: self._zoom_timer.start())
        for layer in list(viewer.layers):
            self._attach_if_detections(layer)

    @property
    def viewer(self):
        return self._viewer_ref()

    # ------------------------------------------------------------------ layers
    def _on_inserted(self, event) -> None:
        self._attach_if_detections(event.value)
        if role_of(event.value) in ("detections", "gt", "eval"):
            self._zoom_timer.start()

    def schedule_marker_fit(self) -> None:
        self._zoom_timer.start()

    def fit_marker_sizes(self) -> None:
        """Keep markers at least ``MIN_SCREEN_PX`` wide on the screen at the current zoom."""
        viewer = self.viewer
        if viewer is None:
            return
        for layer in list(viewer.layers):
            role = role_of(layer)
            if role not in ("detections", "gt", "eval") or len(layer.data) == 0:
                continue
            info = layer.metadata.setdefault(ROLE_KEY, {})
            base = info.setdefault("base_size", float(np.max(layer.size)))
            want = _style.screen_size(base, viewer.camera.zoom)
            if not np.allclose(layer.size, want, rtol=0.03):
                layer.size = want
            layer.current_size = want

    def _on_removed(self, event) -> None:
        rev = self.reviews.pop(unwrap(event.value).unique_id, None)
        if rev is not None:
            rev.flush()

    def _attach_if_detections(self, layer) -> LayerReview | None:
        layer = unwrap(layer)
        if role_of(layer) != "detections" or layer.unique_id in self.reviews:
            return self.reviews.get(layer.unique_id)
        img = self.image_layer_for(layer)
        shape = img.data.shape if img is not None else None
        rev = LayerReview(layer, self, image_path_of(layer), shape)
        info = layer.metadata.get(ROLE_KEY, {})
        rev.touched = info.get("review_status", "unreviewed") != "unreviewed"
        self.restore_params(info.get("params") or {})
        self.reviews[layer.unique_id] = rev
        self._bind_keys(layer)
        self._apply_score_text(layer)
        return rev

    def set_show_scores(self, on: bool) -> None:
        """Show (or hide) each detection's score as a text label."""
        self.show_scores = bool(on)
        for rev in list(self.reviews.values()):
            if rev.layer is not None:
                self._apply_score_text(rev.layer)

    def _apply_score_text(self, layer) -> None:
        if self.show_scores:
            layer.text = dict(_style.SCORE_TEXT)
        layer.text.visible = self.show_scores

    def _bind_keys(self, layer) -> None:
        def _accept(_layer):
            self.review_for(_layer).accept_selected()

        def _reject(_layer):
            self.review_for(_layer).reject_selected()

        def _next(_layer):
            self.review_for(_layer).select_next_pending(self.viewer)

        def _undo(_layer):
            self.review_for(_layer).undo()

        for key, fn in (("a", _accept), ("r", _reject), ("n", _next), ("u", _undo)):
            layer.bind_key(key, fn, overwrite=True)
        layer.bind_key("Control-z", _undo, overwrite=True)

    def review_for(self, layer) -> LayerReview | None:
        if layer is None:
            return None
        layer = unwrap(layer)
        return self.reviews.get(layer.unique_id) or self._attach_if_detections(layer)

    def image_layer_for(self, layer):
        path = image_path_of(layer)
        viewer = self.viewer
        if viewer is None:
            return None
        name = getattr(layer, "name", "")
        for cand in viewer.layers:
            if cand.__class__.__name__ != "Image":
                continue
            if path and image_path_of(cand) == path:
                return cand
            if name.startswith(cand.name + " "):
                return cand
        return None

    def layer_with_role(self, image_layer, role: str):
        path = image_path_of(image_layer)
        for layer in self.viewer.layers:
            if role_of(layer) != role:
                continue
            if path and image_path_of(layer) == path:
                return layer
            if layer.name.startswith(image_layer.name + " "):
                return layer
        return None

    def detections_layer(self, image_layer, create: bool = True):
        layer = self.layer_with_role(image_layer, "detections")
        if layer is None and create:
            layer = self.viewer.add_points(
                np.zeros((0, 2)),
                **detections_layer_kwargs(image_layer.name, image_path_of(image_layer)),
            )
            self.viewer.layers.selection.active = layer
        return layer

    def gt_layer(self, image_layer, create: bool = True):
        layer = self.layer_with_role(image_layer, "gt")
        if layer is None and create:
            layer = self.viewer.add_points(
                np.zeros((0, 2)), **gt_layer_kwargs(image_layer.name, image_path_of(image_layer))
            )
            layer.features = pd.DataFrame({"radius": np.zeros(0)})
        return layer

    def current_image_layer(self):
        viewer = self.viewer
        active = viewer.layers.selection.active
        if active is not None and active.__class__.__name__ == "Image":
            return active
        if active is not None:
            img = self.image_layer_for(active)
            if img is not None:
                return img
        images = [la for la in viewer.layers if la.__class__.__name__ == "Image"]
        return images[-1] if images else None

    def current_review(self) -> LayerReview | None:
        viewer = self.viewer
        active = viewer.layers.selection.active
        if role_of(active) == "detections":
            return self.review_for(active)
        img = self.current_image_layer()
        if img is None:
            return None
        layer = self.detections_layer(img, create=False)
        return self.review_for(layer)

    def restore_params(self, params: dict) -> None:
        """Take γ / NMS saved with a review (sidecar) as the live parameters."""
        new = {}
        for key in ("threshold", "nms_box", "nms_iou"):
            val = params.get(key)
            if isinstance(val, (int, float)) and not isinstance(val, bool) and val >= 0:
                new[key] = float(val)
        if new:
            self.params.update(new)
            self.params_changed.emit(dict(self.params))

    # ------------------------------------------------------------------ detector
    def set_detector(self, handle) -> None:
        self.detector = handle
        if handle is not None:
            self.params.update(handle.defaults)
        self.detector_changed.emit(handle)

    def detector_info(self) -> dict:
        h = self.detector
        if h is None:
            return {}
        return {"name": h.name, "kind": h.kind, "path": h.path}

    def detector_key(self) -> str:
        h = self.detector
        return f"{h.kind}:{h.path or h.name}" if h is not None else ""

    # ------------------------------------------------------------------ raw outputs
    def raw_for(self, image_layer):
        """The cached raw output of ``image_layer`` for the current detector; else the one
        saved beside its review (``IMG.raw.npz``) when no other model is selected."""
        if image_layer is None:
            return None
        raw = self.raw_cache.get((image_layer.unique_id, self.detector_key()))
        if raw is not None:
            return raw
        path = image_path_of(image_layer)
        if not path or not raw_path(path).exists():
            return None
        from . import _api

        saved = _api.load_raw(raw_path(path), np.shape(image_layer.data))
        if saved is None:
            return None
        if self.detector is not None and self.detector.path != saved.detector.get("path"):
            return None
        key = f"{saved.detector.get('kind', 'model')}:{saved.detector.get('path')}"
        self.raw_cache[(image_layer.unique_id, key)] = saved
        if self.detector is None:
            self.raw_cache[(image_layer.unique_id, "")] = saved
        return saved

    def save_raw(self, image_layer, raw) -> None:
        """Write ``IMG.raw.npz`` in a background thread (numpy only)."""
        path = image_path_of(image_layer)
        info = self.detector_info()
        if not path or info.get("kind") != "model":
            return
        import threading

        from . import _api

        def work():
            try:
                _api.save_raw(raw_path(path), raw, info)
            except OSError:
                pass  # a read-only folder: γ needs a new Detect after reopening

        self._raw_writer = threading.Thread(target=work, name="gravity-raw-cache", daemon=True)
        self._raw_writer.start()

    # ------------------------------------------------------------------ ground truth
    def promote_to_gt(self, image_layer, default_radius: float = 3.0) -> tuple[int, Path | None]:
        """Accepted + added detections join the GT layer; written to ``IMG.csv`` with a
        backup of any previous file. Returns (points added, csv path)."""
        from . import _api

        det = self.detections_layer(image_layer, create=False)
        rev = self.review_for(det)
        if rev is None:
            return 0, None
        feats = rev.features
        lesion = rv.lesion_mask(feats)
        new_pts = np.asarray(det.data, dtype=float)[lesion]
        gt = self.gt_layer(image_layer)
        old_pts = np.asarray(gt.data, dtype=float).reshape(-1, 2)
        gfeat = gt.features
        old_r = (
            gfeat["radius"].to_numpy(dtype=float)
            if "radius" in gfeat and len(gfeat) == len(old_pts)
            else np.full(len(old_pts), default_radius)
        )
        if len(old_pts) and len(new_pts):
            d2 = ((new_pts[:, None] - old_pts[None]) ** 2).sum(-1)
            new_pts = new_pts[d2.min(1) > default_radius**2]
        if len(new_pts) == 0:  # nothing new: no rewrite, no backup
            rev.flush()
            return 0, None
        pts = np.concatenate([old_pts, new_pts])
        radii = np.concatenate([old_r, np.full(len(new_pts), default_radius)])
        radii = np.where(np.isfinite(radii), radii, default_radius)
        gt.data = pts
        gt.features = pd.DataFrame({"radius": radii})
        path = None
        img_path = image_path_of(image_layer)
        if img_path:
            path = gt_csv_path(img_path)
            backup_file(path)
            _api.write_points_csv(path, pts, radii)
        rev.flush()
        return len(new_pts), path

    # ------------------------------------------------------------------ sidecar
    @staticmethod
    def load_sidecar(image_path: str):
        p = sidecar_path(image_path)
        return read_review(p) if p.exists() else None


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_session(viewer) -> GravitySession:
    """The session of ``viewer`` (created on first use)."""
    viewer = unwrap(viewer)
    sess = _SESSIONS.get(viewer)
    if sess is None:
        from ._prefs import activate

        activate()  # our reader / writer become napari's defaults for our files
        sess = GravitySession(viewer)
        _SESSIONS[viewer] = sess
    return sess
