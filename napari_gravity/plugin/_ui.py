"""Layout helpers shared by the docks: one line per widget instead of Qt boilerplate."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MUTED = "color: #9aa;"


class ProgressBar(QProgressBar):
    """A progress bar whose new value is drawn with the next paint, not at once.

    ``QProgressBar.setValue`` repaints synchronously; in napari's window, which holds an OpenGL
    canvas, a repaint composes the whole window (~40 ms under software OpenGL), so a bar moved
    by a timer or a worker added that to the event loop's stalls. Here the repaint is deferred
    (updates off while the value changes; turning them back on schedules an ordinary update)."""

    def setValue(self, value: int) -> None:
        if value == self.value():
            return
        self.setUpdatesEnabled(False)
        try:
            super().setValue(value)
        finally:
            self.setUpdatesEnabled(True)


class WrapLabel(QLabel):
    """A word-wrapped label that reserves the height its lines need at its current width.

    Dock layouts do not follow a label's height-for-width, so a second line was cut off (or a
    height computed at an earlier, narrower width left a blank gap): the minimum height is
    refitted whenever the text or the width changes, and an empty label takes no room."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.setWordWrap(True)

    def _fit(self) -> None:
        need = self.heightForWidth(max(self.width(), 1)) if self.text() else 0
        if need >= 0 and need != self.minimumHeight():
            self.setMinimumHeight(need)

    def setText(self, text: str) -> None:
        super().setText(text)
        self._fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()


def label(text: str = "", style: str | None = None) -> QLabel:
    """A word-wrapped label (:class:`WrapLabel`)."""
    w = WrapLabel(text)
    if style:
        w.setStyleSheet(style)
    return w


def button(text: str, slot=None, *, bold=False, tip: str | None = None, enabled=True):
    w = QPushButton(text)
    if bold:
        w.setStyleSheet("font-weight: bold;")
    if tip:
        w.setToolTip(tip)
    if slot is not None:
        w.clicked.connect(slot)
    w.setEnabled(enabled)
    return w


def timer(ms: int, slot, *, single=False, parent=None) -> QTimer:
    t = QTimer(parent)
    t.setInterval(ms)
    t.setSingleShot(single)
    t.timeout.connect(slot)
    return t


def checkbox(text: str, slot=None, *, checked=False, tip: str | None = None) -> QCheckBox:
    w = QCheckBox(text)
    w.setChecked(checked)
    w.setToolTip(tip or "")
    if slot is not None:
        w.toggled.connect(slot)
    return w


def spin(lo: float, hi: float, step: float, decimals=2, suffix: str = "") -> QDoubleSpinBox:
    w = QDoubleSpinBox()
    w.setRange(lo, hi)
    w.setSingleStep(step)
    w.setDecimals(decimals)
    w.setSuffix(suffix)
    return w


def _add(layout, item) -> None:
    """A widget, a layout, a list (a :func:`row`) or, in a form, a ``(label, item)`` pair."""
    if isinstance(item, list):
        item = row(*item)
    if isinstance(layout, QFormLayout):
        if isinstance(item, tuple):
            layout.addRow(item[0], row(*item[1]) if isinstance(item[1], list) else item[1])
        else:
            layout.addRow(item)
    elif isinstance(item, QLayout):
        layout.addLayout(item)
    else:
        layout.addWidget(item)


def row(*items) -> QHBoxLayout:
    """Widgets side by side, the first one stretching."""
    lay = QHBoxLayout()
    for i, w in enumerate(items):
        lay.addWidget(w, 1 if i == 0 else 0)
    return lay


def group(title: str, *items, form=False) -> QGroupBox:
    """A titled box of widgets / layouts; with ``form``, ``(label, widget)`` pairs are rows."""
    box = QGroupBox(title)
    lay = QFormLayout(box) if form else QVBoxLayout(box)
    for item in items:
        _add(lay, item)
    return box


def stack(parent: QWidget, *items) -> QVBoxLayout:
    """``parent``'s layout: ``items`` top to bottom, then a stretch."""
    lay = QVBoxLayout(parent)
    for item in items:
        _add(lay, item)
    lay.addStretch(1)
    return lay
