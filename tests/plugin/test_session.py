"""The per-viewer session (issue 12): the docks share it through napari's public proxies, and
its raw-output cache is bounded (least recently used out first) and follows the layers."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_raw_cache_is_lru_bounded_and_dropped_with_its_layer(make_napari_viewer):
    from napari_gravity.plugin._session import RAW_CACHE_SIZE, get_session

    viewer = make_napari_viewer(show=False)
    session = get_session(viewer)
    imgs = [
        viewer.add_image(np.zeros((8, 8), np.float32), name=f"i{k}")
        for k in range(RAW_CACHE_SIZE + 1)
    ]
    cache = session.raw_cache
    for im in imgs[:RAW_CACHE_SIZE]:  # full
        cache[(im.unique_id, "model:a")] = im.name
    assert cache.get((imgs[0].unique_id, "model:a")) == "i0"  # i0 is now the most recent
    cache[(imgs[-1].unique_id, "model:a")] = "new"
    kept = {key[0] for key in cache}
    assert len(cache) == RAW_CACHE_SIZE
    assert imgs[0].unique_id in kept and imgs[1].unique_id not in kept  # i1 was the oldest
    # a removed layer takes its raw outputs (for every detector) with it
    cache[(imgs[2].unique_id, "classical:Top-hat")] = "other"
    viewer.layers.remove(imgs[2])
    assert all(key[0] != imgs[2].unique_id for key in cache)
    assert len(cache) == RAW_CACHE_SIZE - 1


def test_docks_share_one_session_through_napari_proxies(make_napari_viewer):
    """napari hands every dock its own ``PublicOnlyProxy`` of the viewer; all of them (and the
    viewer itself) find the same session, and the dock never unwraps the proxy."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_gravity.plugin._session import get_session

    viewer = make_napari_viewer(show=False)
    docks = [
        viewer.window.add_plugin_dock_widget("napari-gravity", name)[1]
        for name in ("Detect lesions", "Review")
    ]
    assert all(isinstance(d.viewer, PublicOnlyProxy) for d in docks)
    assert docks[0].session is docks[1].session is get_session(viewer)
    other = make_napari_viewer(show=False)
    assert get_session(other) is not docks[0].session
