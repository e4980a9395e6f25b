"""Per-viewer state shared by the plugin's docks, and the review controller of a layer.

A :class:`GravitySession` per viewer holds the current detector, the raw outputs (a bounded LRU
cache per image layer and detector, dropped with the layer, so γ / NMS changes never re-run the
network), the live parameters and one :class:`LayerReview` per detections layer. The docks never
call each other: they talk through the session's signals. ``LayerReview`` keeps the undo stack
(status changes and napari edits alike) and autosaves the layer to the image's sidecar
``IMG.review.json`` (debounced, atomic).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
from napari.layers import Image
from psygnal import Signal
from qtpy.QtWidgets import QWidget

from . import _api, _style, _ui
from . import review as rv
from .sidecar import (
    Review,
    backup_file,
    gt_csv_path,
    load_raw,
    raw_path,
    save_raw,
    sidecar_path,
    write_review,
)

ROLE_KEY = "gravity"
AUTOSAVE_MS = 300
POINT_SIZE = _style.POINT_SIZE
NEXT_VIEW_PX = 96  # "next pending" shows at least this many image pixels around the point
DOCK_WIDTH = 430  # px: the docks never squeeze the canvas
RAW_CACHE_SIZE = 8  # raw outputs kept (image layer × detector), least recently used out first
MARKER_ROLES = ("detections", "gt", "eval")


def _info(layer) -> dict:
    return (getattr(layer, "metadata", None) or {}).get(ROLE_KEY) or {}


def role_of(layer) -> str | None:
    return _info(layer).get("role")


def image_path_of(layer) -> str | None:
    return _info(layer).get("image_path") or (getattr(layer, "metadata", None) or {}).get("path")


def layer_kwargs(role: str, image_name: str, image_path: str | None, size=POINT_SIZE) -> dict:
    """``add_points`` keywords of an image's ``detections`` (status rings) or ``gt`` layer."""
    kw = {
        "metadata": {ROLE_KEY: {"role": role, "image_path": image_path}},
        **_style.marker_kwargs(),
    }
    if role == "detections":  # a transparent face: a clean circle outline at every zoom
        features, defaults = rv.make_features(np.zeros(0)), dict(rv.USER_DEFAULTS)
        kw.update(name=f"{image_name} detections", size=size, symbol="disc")
        return {**kw, "features": features, "feature_defaults": defaults}
    kw.update(name=f"{image_name} ground truth", size=size * 1.5, symbol="square")
    kw.update(border_color=_style.PALETTE["gt"], border_width=0.08)
    return {**kw, "features": pd.DataFrame({"radius": np.zeros(0)})}


class RawCache(OrderedDict):
    """(image layer ``unique_id``, detector key) → raw output, least recently used out first."""

    def __init__(self, maxsize: int = RAW_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        super().__init__()

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def drop_layer(self, layer_id) -> None:
        for key in [k for k in self if k[0] == layer_id]:
            del self[key]


class LayerReview:
    """Review controller of one detections Points layer (undo + autosave)."""

    def __init__(self, layer, session: GravitySession, image_path: str | None, image_shape=None):
        self.layer = layer
        self.session = session
        self.image_path = image_path
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.undo_stack = rv.UndoStack()
        self.touched = False
        self._busy = False
        self._timer = _ui.timer(AUTOSAVE_MS, self.save_now, single=True)
        layer.feature_defaults = dict(rv.USER_DEFAULTS)
        layer.events.data.connect(self._on_data)
        self.recolor()

    # ------------------------------------------------------------------ napari edits
    def _on_data(self, event) -> None:
        if self._busy:
            return
        action = str(getattr(event, "action", ""))
        if action in ("adding", "removing", "changing"):
            # napari emits these *before* the change: the state to go back to
            old = getattr(event, "value", None)
            data = self.layer.data if old is None else old
            self.undo_stack.push(data, rv.clean_features(self.layer.features, len(data)), action)
            self._n_before = len(data)
        elif action in ("added", "removed", "changed"):
            n_before = getattr(self, "_n_before", len(self.layer.data))
            if action == "added" and len(self.layer.data) > n_before:
                # napari copies the selected point's features into a new point: a point
                # the user adds is always (score 1, source user, status added)
                feats = self.layer.features.copy()
                for col, val in rv.USER_DEFAULTS.items():
                    feats.loc[feats.index[n_before:], col] = val
                with self._quiet():
                    self.layer.features = rv.clean_features(feats, len(self.layer.data))
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
        with self._quiet():
            selected = set(layer.selected_data)
            layer.data = data
            layer.features = rv.clean_features(features, len(data))
            layer.selected_data = {i for i in selected if i < len(data)}
            self.recolor()
        self.touched = self.touched or touched
        refit = getattr(self.session, "schedule_marker_fit", None)
        if refit is not None:
            refit()  # new points get the zoom-aware size too
        self.changed()

    def recolor(self) -> None:
        layer = self.layer
        if len(layer.data) == 0:
            return
        feats, old = self.features, layer.features
        with self._quiet():
            if list(old.columns) != list(feats.columns) or len(old) != len(feats):
                layer.features = feats
            layer.face_color = "transparent"
            layer.border_color = _style.border_colors(feats)

    @contextlib.contextmanager
    def _quiet(self):
        """Our own edits of the layer: not user edits (no undo entry, no re-entry)."""
        was, self._busy = self._busy, True
        try:
            yield
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
        new = self.features.copy()
        user = (new["source"] == "user").to_numpy()
        for i in idx:
            new.at[i, "status"] = "added" if status == "accepted" and user[i] else status
        self.set_content(self.layer.data, new, label=status)
        return len(idx)

    def accept_selected(self) -> int:
        return self.set_status(self.layer.selected_data, "accepted")

    def reject_selected(self) -> int:
        return self.set_status(self.layer.selected_data, "rejected")

    def accept_above(self, threshold: float) -> int:
        f = self.features
        pending = (f["status"] == "pending").to_numpy()
        above = f["score"].to_numpy(float) >= threshold
        return self.set_status(np.flatnonzero(pending & above), "accepted")

    def select_next_pending(self) -> int | None:
        sel = sorted(self.layer.selected_data)
        i = rv.next_pending(self.features, sel[0] if sel else None)
        if i is None:
            return None
        self.layer.selected_data = {i}
        viewer = getattr(self.session, "viewer", None)
        if viewer is not None:
            viewer.camera.center = tuple(self.layer.data[i])
            canvas = getattr(getattr(viewer, "canvas", None), "size", None) or (600, 600)
            viewer.camera.zoom = max(viewer.camera.zoom, min(canvas) / NEXT_VIEW_PX)
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
        self.set_content(pts, feats, label=None, touched=False)

    # ------------------------------------------------------------------ persistence
    @property
    def status(self) -> str:
        return rv.image_review_status(self.features, self.touched)

    def save_now(self) -> Path | None:
        self._timer.stop()
        if not self.image_path:
            return None
        path = sidecar_path(self.image_path)
        review = Review(
            Path(self.image_path).name,
            np.asarray(self.layer.data, dtype=float),
            self.features,
            self.status,
            self.image_shape,
            params=dict(self.session.params),
            detector=self.session.detector_info(),
        )
        write_review(path, review)
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
    params_changed = Signal(dict)  # γ / NMS restored from a sidecar
    model_selected = Signal(object)  # (kind, ref) picked in the Detect dock
    use_model = Signal(str)  # run this model file on the current image (from Retrain)
    step_image = Signal(int)  # open the next (+1) / previous (-1) image of the queue

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.detector = None  # _api.Detector
        self.selected_model: tuple[str, str] | None = None
        self.params = dict(_api.DEFAULT_PARAMS)
        self.raw_cache = RawCache()
        self.reviews: dict = {}  # detections layer unique_id -> LayerReview
        self.queue: list[str] = []
        self.show_scores = False  # score text next to each detection
        self.model_selected.connect(lambda sel: setattr(self, "selected_model", sel))
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        self._zoom_timer = _ui.timer(60, self.fit_marker_sizes, single=True)
        viewer.camera.events.zoom.connect(self.schedule_marker_fit)
        for layer in list(viewer.layers):
            self._attach_if_detections(layer)

    # ------------------------------------------------------------------ layers
    def _on_inserted(self, event) -> None:
        self._attach_if_detections(event.value)
        if role_of(event.value) in MARKER_ROLES:
            self.schedule_marker_fit()

    def _on_removed(self, event) -> None:
        self.raw_cache.drop_layer(event.value.unique_id)
        rev = self.reviews.pop(event.value.unique_id, None)
        if rev is not None:
            rev.flush()

    def schedule_marker_fit(self, *_) -> None:
        self._zoom_timer.start()

    def fit_marker_sizes(self) -> None:
        """Keep markers at least ``MIN_SCREEN_PX`` wide on the screen at the current zoom."""
        for layer in list(self.viewer.layers):
            if role_of(layer) not in MARKER_ROLES or len(layer.data) == 0:
                continue
            base = layer.metadata[ROLE_KEY].setdefault("base_size", float(np.max(layer.size)))
            want = _style.screen_size(base, self.viewer.camera.zoom)
            if not np.allclose(layer.size, want, rtol=0.03):
                layer.size = want
            layer.current_size = want

    def _attach_if_detections(self, layer) -> LayerReview | None:
        if role_of(layer) != "detections" or layer.unique_id in self.reviews:
            return self.reviews.get(layer.unique_id)
        img = self.image_layer_for(layer)
        rev = LayerReview(
            layer, self, image_path_of(layer), None if img is None else img.data.shape
        )
        rev.touched = _info(layer).get("review_status", "unreviewed") != "unreviewed"
        self.restore_params(_info(layer).get("params") or {})
        self.reviews[layer.unique_id] = rev
        keys = {"a": "accept_selected", "r": "reject_selected", "n": "select_next_pending"}
        for key, action in {**keys, "u": "undo", "Control-z": "undo"}.items():
            layer.bind_key(key, self._key_action(action), overwrite=True)
        self._apply_score_text(layer)
        return rev

    def _key_action(self, action: str):
        return lambda layer: getattr(self.review_for(layer), action)()

    def set_show_scores(self, on: bool) -> None:
        """Show (or hide) each detection's score as a text label."""
        self.show_scores = bool(on)
        for rev in list(self.reviews.values()):
            self._apply_score_text(rev.layer)

    def _apply_score_text(self, layer) -> None:
        if self.show_scores:
            layer.text = dict(_style.SCORE_TEXT)
        layer.text.visible = self.show_scores

    def flush_reviews(self) -> None:
        """Write every pending autosave now."""
        for rev in list(self.reviews.values()):
            rev.flush()

    def review_for(self, layer) -> LayerReview | None:
        if layer is None:
            return None
        return self.reviews.get(layer.unique_id) or self._attach_if_detections(layer)

    @staticmethod
    def _belongs(layer, image_layer) -> bool:
        """``layer`` (detections, ground truth, ...) was made for ``image_layer``."""
        path = image_path_of(image_layer)
        if path and image_path_of(layer) == path:
            return True
        return layer.name.startswith(image_layer.name + " ")

    def images(self) -> list:
        return [la for la in self.viewer.layers if isinstance(la, Image)]

    def image_layer_for(self, layer):
        return next((im for im in self.images() if self._belongs(layer, im)), None)

    def role_layer(self, image_layer, role: str, create: bool = True):
        """The ``role`` layer ("detections", "gt") of ``image_layer``; made when missing."""
        layers = self.viewer.layers
        found = next(
            (la for la in layers if role_of(la) == role and self._belongs(la, image_layer)), None
        )
        if found is None and create:
            kwargs = layer_kwargs(role, image_layer.name, image_path_of(image_layer))
            found = self.viewer.add_points(np.zeros((0, 2)), **kwargs)
            if role == "detections":
                layers.selection.active = found
        return found

    def detections_layer(self, image_layer, create: bool = True):
        return self.role_layer(image_layer, "detections", create)

    def gt_layer(self, image_layer, create: bool = True):
        return self.role_layer(image_layer, "gt", create)

    def current_image_layer(self):
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        img = self.image_layer_for(active) if active is not None else None
        images = self.images()
        return img if img is not None else images[-1] if images else None

    def current_review(self) -> LayerReview | None:
        active = self.viewer.layers.selection.active
        if role_of(active) == "detections":
            return self.review_for(active)
        img = self.current_image_layer()
        return None if img is None else self.review_for(self.detections_layer(img, create=False))

    def restore_params(self, params: dict) -> None:
        """Take γ / NMS saved with a review (sidecar) as the live parameters."""
        ok = {k: v for k, v in params.items() if type(v) in (int, float) and v >= 0}
        new = {k: float(v) for k, v in ok.items() if k in _api.DEFAULT_PARAMS}
        if new:
            self.params.update(new)
            self.params_changed.emit(dict(self.params))

    # ------------------------------------------------------------------ detector
    def set_detector(self, detector) -> None:
        self.detector = detector
        if detector is not None:
            self.params.update(detector.defaults)
        self.detector_changed.emit(detector)

    def detector_info(self) -> dict:
        d = self.detector
        return {} if d is None else {"name": d.name, "kind": d.kind, "path": d.path}

    def detector_key(self) -> str:
        d = self.detector
        return f"{d.kind}:{d.path or d.name}" if d is not None else ""

    # ------------------------------------------------------------------ raw outputs
    def raw_for(self, image_layer):
        """The cached raw output of ``image_layer`` for the current detector; else the one
        saved beside its review (``IMG.raw.npz``) when no other model is selected."""
        if image_layer is None:
            return None
        uid = image_layer.unique_id
        raw = self.raw_cache.get((uid, self.detector_key()))
        path = image_path_of(image_layer)
        if raw is not None or not path or not raw_path(path).exists():
            return raw
        saved = load_raw(raw_path(path), np.shape(image_layer.data))
        made_by = (saved.detector or {}) if saved is not None else {}
        if saved is None or (self.detector is not None and self.detector.path != made_by["path"]):
            return None
        self.raw_cache[(uid, f"{made_by.get('kind', 'model')}:{made_by['path']}")] = saved
        if self.detector is None:
            self.raw_cache[(uid, "")] = saved
        return saved

    def save_raw(self, image_layer, raw) -> None:
        """Write ``IMG.raw.npz`` in a background thread (numpy only)."""
        path, info = image_path_of(image_layer), self.detector_info()
        if not path or getattr(raw, "gravity_points", None) is None:
            return

        def work():
            try:
                save_raw(raw_path(path), raw, info)
            except OSError:
                pass  # a read-only folder: γ needs a new Detect after reopening

        self._raw_writer = threading.Thread(target=work, name="gravity-raw-cache", daemon=True)
        self._raw_writer.start()

    # ------------------------------------------------------------------ ground truth
    def promote_to_gt(self, image_layer, default_radius: float = 3.0) -> tuple[int, Path | None]:
        """Accepted + added detections join the GT layer; written to ``IMG.csv`` with a
        backup of any previous file. Returns (points added, csv path)."""
        rev = self.review_for(self.detections_layer(image_layer, create=False))
        if rev is None:
            return 0, None
        new_pts = np.asarray(rev.layer.data, dtype=float)[rv.lesion_mask(rev.features)]
        gt = self.gt_layer(image_layer)
        old_pts, f = np.asarray(gt.data, dtype=float).reshape(-1, 2), gt.features
        has_radius = "radius" in f and len(f) == len(old_pts)
        old_radii = f["radius"].to_numpy(float) if has_radius else np.full(len(old_pts), np.nan)
        new_pts = rv.new_points(new_pts, old_pts, default_radius)
        rev.flush()
        if len(new_pts) == 0:  # nothing new: no rewrite, no backup
            return 0, None
        pts = np.concatenate([old_pts, new_pts])
        radii = np.concatenate([old_radii, np.full(len(new_pts), default_radius)])
        radii = np.where(np.isfinite(radii), radii, default_radius)
        gt.data = pts
        gt.features = pd.DataFrame({"radius": radii})
        img_path = image_path_of(image_layer)
        if not img_path:
            return len(new_pts), None
        path = gt_csv_path(img_path)
        backup_file(path)
        _api.write_points_csv(path, pts, radii)
        return len(new_pts), path


_SESSIONS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def get_session(viewer) -> GravitySession:
    """The session of ``viewer`` (created on first use; the docks hold it, so it lives as long
    as they do). napari hands each dock its own public proxy of the viewer: proxies hash like
    the viewer, so every dock of one viewer finds the same session."""
    sess = _SESSIONS.get(hash(viewer))
    if sess is None:
        from ._prefs import activate

        activate()  # our reader / writer become napari's defaults for our files
        sess = _SESSIONS[hash(viewer)] = GravitySession(viewer)
    return sess


class Dock(QWidget):
    """Base of the plugin's docks: the viewer napari hands in, and its session."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.setMaximumWidth(DOCK_WIDTH)  # the docks never squeeze the canvas
