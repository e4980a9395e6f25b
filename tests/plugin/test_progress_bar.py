"""The docks' progress bar draws a new value with the next paint instead of repainting inside
``setValue`` (in napari's window a synchronous repaint composes the whole OpenGL window)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def _paints_during_set(qtbot, bar, value):
    from qtpy.QtCore import QEvent, QObject

    class Count(QObject):
        n = 0

        def eventFilter(self, obj, ev):
            if ev.type() == QEvent.Type.Paint:
                Count.n += 1
            return False

    f = Count()
    bar.installEventFilter(f)
    bar.setValue(value)
    during = Count.n
    qtbot.wait(100)
    after = Count.n
    bar.removeEventFilter(f)
    return during, after


def test_progress_bar_repaints_later_not_inside_set_value(qtbot):
    from qtpy.QtWidgets import QProgressBar

    from napari_gravity.plugin._ui import ProgressBar

    plain, ours = QProgressBar(), ProgressBar()
    for bar in (plain, ours):
        qtbot.addWidget(bar)
        bar.setRange(0, 1000)
        bar.show()
        qtbot.waitExposed(bar)
        qtbot.wait(50)
    # the premise: Qt's own bar paints inside setValue
    assert _paints_during_set(qtbot, plain, 500)[0] >= 1
    during, after = _paints_during_set(qtbot, ours, 500)
    assert during == 0 and after >= 1  # drawn, but by the event loop
    assert ours.value() == 500 and ours.isEnabled() and ours.updatesEnabled()
    assert _paints_during_set(qtbot, ours, 500) == (0, 0)  # same value: nothing to draw
