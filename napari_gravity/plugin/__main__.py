"""``python -m napari_gravity.plugin``: napari with the plugin's docks and a sample mammogram."""

from __future__ import annotations

import argparse

DOCKS = ("Detect lesions", "Review", "Evaluate", "Retrain")


def docked_viewer(make_viewer, size=(1500, 1050), **viewer_kw):
    """(viewer, {name: (dock, widget)}): a hidden viewer from ``make_viewer(show=False, ...)``
    with the four docks arranged, returned once torch is imported and the startup heap settled.

    torch is imported in the background while napari builds the window; the caller shows it
    afterwards, so the GUI never stalls on the import later (see ``_torch``)."""
    from . import _torch

    _torch.keep_triton_out()
    _torch.start_torch_import()
    viewer = make_viewer(show=False, **viewer_kw)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-gravity", name) for name in DOCKS}
    arrange(viewer, docks, size)
    _torch.finish_import_before_showing()
    return viewer, docks


def open_viewer(sample: str | None = "mammogram", paths=(), show: bool = True):
    """A napari viewer with the four docks (Detect and Review tabbed on the right), shown only
    once torch is in (``docked_viewer``)."""
    import napari

    from ._prefs import activate

    activate()
    viewer, docks = docked_viewer(napari.Viewer, title="napari-gravity")
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
