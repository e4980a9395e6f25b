"""``python -m napari_gravity.plugin``: napari with the plugin's docks and a sample mammogram."""

from __future__ import annotations

import argparse

DOCKS = ("Detect lesions", "Review", "Evaluate", "Retrain")


def open_viewer(sample: str | None = "mammogram", paths=(), show: bool = True):
    """A napari viewer with the four docks (Detect and Review tabbed on the right).

    torch is imported in the background while napari starts, and the window shows only once
    it is in: the GUI never stalls on the import later (see ``_torch``)."""
    import napari

    from . import _torch
    from ._prefs import activate

    activate()
    _torch.keep_triton_out()
    _torch.start_torch_import()
    viewer = napari.Viewer(title="napari-gravity", show=False)
    docks = {}
    for name in DOCKS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-gravity", name)
        docks[name] = (dock, widget)
    arrange(viewer, docks)
    _torch.finish_import_before_showing()
    if show:
        viewer.window.show()
    for path in paths:
        viewer.open(path, plugin=None)  # as File > Open: the preferred reader (ours, see _prefs)
    if sample and not paths:
        viewer.open_sample("napari-gravity", sample)
    return viewer, docks


def arrange(viewer, docks, size=(1500, 1050)) -> None:
    """Detect on top; Review, Evaluate and Retrain tabbed below it; a screen-sized window."""
    qt_window = viewer.window._qt_window
    review = docks["Review"][0]
    for name in ("Evaluate", "Retrain"):
        qt_window.tabifyDockWidget(review, docks[name][0])
    review.raise_()
    qt_window.resize(*size)
    from qtpy.QtCore import Qt

    detect = docks["Detect lesions"][0]
    qt_window.resizeDocks([detect, review], [400, size[1] - 400], Qt.Orientation.Vertical)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_gravity.plugin", description=__doc__)
    parser.add_argument("paths", nargs="*", help="images to open (default: the sample)")
    parser.add_argument(
        "--sample", default="mammogram", choices=["mammogram", "fundus", "retina", "none"]
    )
    args = parser.parse_args(argv)
    import napari

    open_viewer(None if args.sample == "none" else args.sample, args.paths)
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
