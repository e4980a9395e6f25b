"""Make napari-gravity napari's default for its own files (called when the plugin activates).

- Reader: napari asks "Choose reader" whenever two plugins can read a file and the user has no
  preference (``settings.plugins.extension2reader``). We add ours for the image patterns we read,
  never replacing a preference the user already set.
- Writer: for a points layer saved as ``.csv`` napari takes the first compatible writer in npe2's
  registration order (the builtins come first). We move ours to the front; it writes our CSV for
  the plugin's layers and hands every other points layer to napari's own writer, so nothing
  changes for layers that are not ours.
"""

from __future__ import annotations

PLUGIN = "napari-gravity"
READER_PATTERNS = tuple(
    p
    for ext in ("dcm", "dicom", "tif", "tiff", "png", "jpg", "jpeg")
    for p in (f"*.{ext}", f"*.{ext.upper()}")
)


def claim_reader_preferences() -> list[str]:
    """Prefer our reader for our image patterns where the user has no preference; returns the
    patterns added."""
    try:
        from napari.settings import get_settings
    except ImportError:  # pragma: no cover - napari missing
        return []
    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    added = [p for p in READER_PATTERNS if p not in current]
    if added:
        plugins.extension2reader = {**current, **{p: PLUGIN for p in added}}
    return added


def prefer_our_writer() -> bool:
    """Put our points writer first among npe2's writers (ties go to the first)."""
    try:
        from npe2 import PluginManager

        contrib = PluginManager.instance()._contrib
        writers = list(contrib._writers)
    except (ImportError, AttributeError):  # pragma: no cover - another npe2
        return False
    ours = [w for w in writers if str(w[3].command).startswith(PLUGIN + ".")]
    if not ours:
        return False
    contrib._writers = ours + [w for w in writers if w not in ours]
    return True


def activate(context=None) -> None:
    """npe2 ``on_activate`` hook (also called by the docks and ``python -m``)."""
    claim_reader_preferences()
    prefer_our_writer()
