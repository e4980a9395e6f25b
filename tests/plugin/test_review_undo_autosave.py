"""Undo of every review edit (a / r / accept-all / add / move / delete) and the autosave's
debounce and flush, on a napari Points layer without a viewer or a display.

``LayerReview`` (plugin/_session.py) schedules the sidecar write on a single-shot QTimer; the
logic tests swap in a manual timer (fired by the test), and one test runs the real QTimer
through pytest-qt's event loop."""

from __future__ import annotations

import os

import numpy as np
import pytest
from psygnal import Signal

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from napari.layers import Points
from napari.utils._test_utils import read_only_mouse_event
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)

from napari_gravity.plugin import _session, _ui
from napari_gravity.plugin import review as rv
from napari_gravity.plugin.sidecar import read_review, sidecar_path

PTS = np.array([[10.0, 10.0], [20.0, 30.0], [40.0, 15.0], [50.0, 50.0]])
SCORES = [0.9, 0.6, 0.3, 0.8]


class FakeSession:
    """What a LayerReview needs from the plugin session."""

    review_changed = Signal(object)
    saved = Signal(str)

    def __init__(self) -> None:
        self.params = {"threshold": 0.5, "nms_box": 7.0, "nms_iou": 0.5}

    def detector_info(self) -> dict:
        return {"name": "fake", "kind": "model", "path": None}


class ManualTimer:
    """Stands in for the single-shot QTimer: the test decides when time has passed."""

    def __init__(self, *a) -> None:
        self.active = False
        self.starts = 0
        self._slots = []
        self.timeout = self

    # QTimer API used by LayerReview
    def connect(self, slot) -> None:  # timeout.connect
        self._slots.append(slot)

    def setSingleShot(self, on: bool) -> None:
        self.single_shot = on  # fires once either way: save_now() stops the timer

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def start(self) -> None:
        self.active = True
        self.starts += 1

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def elapse(self) -> None:
        """The interval passed without a new start: fire once (single shot)."""
        if self.active:
            self.active = False
            for slot in self._slots:
                slot()


def _layer():
    feats = rv.make_features(SCORES, status=["pending", "pending", "pending", "accepted"])
    return Points(PTS.copy(), features=feats, feature_defaults=dict(rv.USER_DEFAULTS))


def _state(rev):
    f = rev.features
    return (
        np.array(rev.layer.data, copy=True),
        f["status"].tolist(),
        f["source"].tolist(),
        f["score"].tolist(),
    )


def _same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.fixture
def review(tmp_path, monkeypatch):
    monkeypatch.setattr(_ui, "QTimer", ManualTimer)  # the timers _ui.timer makes
    writes = []
    real = _session.write_review
    monkeypatch.setattr(_session, "write_review", lambda p, r: writes.append(r) or real(p, r))
    layer = _layer()
    rev = _session.LayerReview(layer, FakeSession(), str(tmp_path / "img.png"), (64, 64))
    rev.writes = writes
    # the review holds its layer weakly (in napari the viewer owns it): keep it alive here, or a
    # garbage collection mid-test leaves review.layer None
    rev.owner = layer
    return rev


def _drag(layer, index, to):
    layer.mode = "select"
    layer.selected_data = {index}
    start = tuple(layer.data[index])
    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", position=start))
    ev = read_only_mouse_event(type="mouse_move", is_dragging=True, position=tuple(to))
    mouse_move_callbacks(layer, ev)
    mouse_move_callbacks(layer, ev)
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", position=to))


def _edit(rev, kind):
    layer = rev.layer
    if kind == "accept":  # key a
        layer.selected_data = {1}
        assert rev.accept_selected() == 1
    elif kind == "reject":  # key r
        layer.selected_data = {0, 2}
        assert rev.reject_selected() == 2
    elif kind == "accept_all":  # "Accept all ≥ γ": pending points scoring ≥ 0.5
        rev.accept_above(0.5)
    elif kind == "add":
        layer.add(np.array([[33.0, 44.0]]))
    elif kind == "move":
        _drag(layer, 3, (55.0, 58.0))
    elif kind == "delete":
        layer.selected_data = {3}  # an accepted point: its review must come back with it
        layer.remove_selected()
    else:
        raise AssertionError(kind)


EDITS = ["accept", "reject", "accept_all", "add", "move", "delete"]
EXPECT = {  # the state right after each edit applied to the fixture's layer on its own
    "accept": lambda s: s[1] == ["pending", "accepted", "pending", "accepted"],
    "reject": lambda s: s[1] == ["rejected", "pending", "rejected", "accepted"],
    "accept_all": lambda s: s[1] == ["accepted", "accepted", "pending", "accepted"],
    "add": lambda s: len(s[0]) == 5 and (s[1][-1], s[2][-1], s[3][-1]) == ("added", "user", 1.0),
    "move": lambda s: np.allclose(s[0][3], [55.0, 58.0]) and np.allclose(s[0][:3], PTS[:3]),
    "delete": lambda s: len(s[0]) == 3 and s[1] == ["pending"] * 3,
}


@pytest.mark.parametrize("kind", EDITS)
def test_each_edit_is_undone(review, kind):
    before = _state(review)
    _edit(review, kind)
    after = _state(review)
    assert EXPECT[kind](after), after
    assert len(review.undo_stack) == 1 and review.touched
    review.undo()
    assert _same(_state(review), before), _state(review)
    assert len(review.undo_stack) == 0 and review.undo() is None


def test_mixed_edits_undo_in_reverse_order(review):
    states = [_state(review)]
    for kind in ["add", "accept", "move", "reject", "delete", "accept_all"]:
        if kind == "accept":
            review.layer.selected_data = {4}  # the added point: a user point stays "added"
            review.accept_selected()
        elif kind == "reject":
            review.layer.selected_data = {1}
            review.reject_selected()
        else:
            _edit(review, kind)
        states.append(_state(review))
    assert states[2][1][4] == "added"  # accepting a user point keeps it "added"
    assert len(review.undo_stack) == 6
    for want in reversed(states[:-1]):
        review.undo()
        assert _same(_state(review), want)
    assert review.undo() is None


def test_autosave_is_debounced_and_flushed(review, tmp_path):
    timer = review._timer
    path = sidecar_path(tmp_path / "img.png")
    for kind in ["accept", "add", "move"]:  # a burst of edits
        _edit(review, kind)
    assert timer.isActive() and timer.starts >= 3  # each edit restarts the countdown
    assert review.writes == [] and not path.exists()  # nothing written during the burst
    timer.elapse()  # the interval passes once: one write with the latest state
    assert len(review.writes) == 1
    saved = read_review(path)
    np.testing.assert_allclose(saved.points, review.layer.data)
    assert saved.features["status"].tolist() == review.features["status"].tolist()
    assert saved.status == "in_progress" and saved.params["threshold"] == 0.5
    timer.elapse()  # single shot: no second write without a new change
    review.flush()  # nothing pending: no write
    assert len(review.writes) == 1

    review.undo()  # an undo is a change too
    assert timer.isActive() and len(review.writes) == 1
    review.flush()  # leaving the image: written at once, the countdown cancelled
    assert len(review.writes) == 2 and not timer.isActive()
    assert len(read_review(path).points) == 5  # the move was undone, the added point kept
    timer.elapse()
    assert len(review.writes) == 2


def test_real_qtimer_writes_once_after_the_burst(qtbot, tmp_path, monkeypatch):
    writes = []
    real = _session.write_review
    monkeypatch.setattr(_session, "write_review", lambda p, r: writes.append(1) or real(p, r))
    layer = _layer()  # held here: the review holds it weakly
    rev = _session.LayerReview(layer, FakeSession(), str(tmp_path / "img.png"), (64, 64))
    for kind in ["accept", "reject", "add"]:
        _edit(rev, kind)
    assert writes == []  # the event loop has not run: the timer cannot have fired
    qtbot.waitUntil(lambda: len(writes) == 1, timeout=5000)
    qtbot.wait(2 * _session.AUTOSAVE_MS)
    assert len(writes) == 1  # single shot
    assert read_review(sidecar_path(tmp_path / "img.png")).features["status"].tolist()[:3] == [
        "rejected",
        "accepted",
        "rejected",
    ]
