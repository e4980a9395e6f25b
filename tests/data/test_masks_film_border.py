"""breast_mask on a scanned film: the film's bright border strip touches the breast at the chest
wall and must not join the breast mask (it made the mask's box the whole film)."""

from __future__ import annotations

import numpy as np

from napari_gravity.data.masks import breast_mask


def _film(border: bool) -> tuple[np.ndarray, np.ndarray]:
    h, w = 2000, 1200
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((yy - h / 2) / (0.42 * h)) ** 2 + (xx / (0.6 * w)) ** 2 < 1  # chest wall left
    rng = np.random.default_rng(0)
    img = rng.normal(200, 20, (h, w))  # air
    img[breast] += 2500 + rng.normal(0, 200, breast.sum())
    if border:  # an 8 px bright frame on the top, right and bottom edges of the film
        img[:8, :] = img[-8:, :] = 3000
        img[:, -8:] = 3000
    return img.astype(np.float32), breast


def test_the_film_border_is_not_breast_and_the_breast_is_kept():
    img, breast = _film(border=True)
    m = breast_mask(img)
    assert not m[:8, 900:].any() and not m[:, -8:].any() and not m[-8:, 900:].any()
    agree = (m == breast).mean()
    assert agree > 0.99
    assert m[breast].mean() > 0.99  # the skin line survives


def test_without_a_border_the_mask_is_unchanged_by_the_strip_rule():
    img, breast = _film(border=False)
    m = breast_mask(img)
    assert (m == breast).mean() > 0.99 and m[breast].mean() > 0.99
