"""Field-of-view scale (core/fov.py) and the Predictor's resampling to a model's FOV.

Diameters come from discs drawn by hand; the Predictor on an image enlarged 2× (each pixel
repeated 2×2) must give exactly the detections of the original image, mapped by hand."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.core import Predictor
from napari_gravity.core.fov import fov_diameter, fov_zoom, resample


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_diameter_of_a_whole_and_of_a_clipped_disc():
    m = disc((700, 760), 350, 380, 300)
    assert fov_diameter(m) == pytest.approx(600, abs=3)
    # clipped at the top and bottom as a camera writes it: rows 150-549 only
    assert fov_diameter(m[150:550]) == pytest.approx(600, abs=3)
    # a large mask is measured on a subsampled copy: still within half a percent
    big = disc((3300, 3300), 1650, 1650, 1500)
    assert fov_diameter(big) == pytest.approx(3000, rel=0.005)


def test_no_diameter_where_the_rim_is_not_seen():
    m = disc((700, 760), 350, 380, 300)
    assert fov_diameter(m[250:450, 280:480]) is None  # a window inside the FOV: all True
    assert fov_diameter(m[30:130, 300:460]) is None  # an arc of the rim, ~30°
    assert fov_diameter(np.zeros((50, 50), bool)) is None
    sq = np.zeros((600, 600), bool)
    sq[100:500, 100:500] = True  # a square: its rim is no circle
    assert fov_diameter(sq) is None


def test_diameter_despite_a_flat_stretch_and_notches_in_the_rim():
    """Retina too dark to tell from the surround cuts a chord or notches into the mask: the fit
    follows the rest of the rim (a plain least-squares fit over every rim pixel is pulled in
    by 3 % and more, or fails)."""
    yy, xx = np.mgrid[:700, :760]
    d = disc((700, 760), 350, 380, 300)
    for c in (0.9, 0.7):  # the retina beyond x = cx + c·r lost to the surround
        assert fov_diameter(d & (xx < 380 + c * 300)) == pytest.approx(600, rel=0.01)
    m = d.copy()
    for a in np.linspace(0.3, 6.0, 6):
        cy, cx = 350 + 300 * np.sin(a), 380 + 300 * np.cos(a)
        m &= ~((yy - cy) ** 2 + (xx - cx) ** 2 < 40**2)
    assert fov_diameter(m) == pytest.approx(600, rel=0.01)
    # half of the disc gone (two chords at 0.8 r): too little of the rim left on one circle
    assert fov_diameter(d & (xx < 380 + 240) & (yy > 350 - 240)) is None


def test_zoom_to_the_reference():
    m = disc((700, 760), 350, 380, 300)
    d = fov_diameter(m)
    assert fov_zoom(m, 1200.0) == pytest.approx(1200.0 / d)
    assert fov_zoom(m, 1.05 * d) == 1.0  # within 10 %
    assert fov_zoom(m, None) == 1.0 and fov_zoom(None, 1200.0) == 1.0
    assert fov_zoom(m, 100 * d) == 1.0  # an implausible zoom is a failed measurement


def test_resample_shrinks_an_enlarged_image_back_exactly():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (30, 42)).astype(np.float32)
    mask = rng.uniform(size=(30, 42)) > 0.5
    big = np.repeat(np.repeat(img, 2, 0), 2, 1)
    bmask = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    small, smask, (zy, zx) = resample(big, bmask, 0.5)
    assert (zy, zx) == (0.5, 0.5)
    np.testing.assert_array_equal(small, img)
    np.testing.assert_array_equal(smask, mask)
    up, _, (zy, zx) = resample(img, None, 1.5)
    assert up.shape == (45, 63) and (zy, zx) == (1.5, 1.5)


@pytest.mark.parametrize("postprocess", ["device", "host"])
def test_an_enlarged_fundus_gives_the_original_detections(paper_net, postprocess):
    net = paper_net
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 40, (208, 232)).astype(np.float32)
    mask = disc(img.shape, 104, 116, 96)
    img[mask] += 100 + rng.uniform(0, 60, mask.sum()).astype(np.float32)
    big = np.repeat(np.repeat(img, 2, 0), 2, 1)
    bmask = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    ref = 0.5 * fov_diameter(bmask)  # the model's FOV: exactly half the enlarged one
    plain = Predictor(net, device="cpu", postprocess=postprocess)
    scaled = Predictor(net, device="cpu", postprocess=postprocess, fov_reference=ref)
    assert scaled.zoom_for(bmask) == 0.5
    want = plain.detect(img, mask=mask, threshold=0.05)
    got = scaled.detect(big, mask=bmask, threshold=0.05)
    assert len(want) > 5 and got.zoom == 0.5 and want.zoom == 1.0
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    # pixel p of the original covers [2p, 2p + 2) of the enlarged image: centre 2p + 0.5
    np.testing.assert_allclose(got.points, (want.points + 0.5) * 2 - 0.5, atol=1e-4)
    # the cached path (raw + from_raw, as the GUI uses it) agrees, and a γ change is exact
    raw = scaled.raw(big, bmask)
    assert raw.zoom == 0.5 and raw.image_shape == big.shape
    again = scaled.from_raw(raw, bmask, threshold=0.2)
    np.testing.assert_allclose(again.scores, want.scores[want.scores >= 0.2], rtol=1e-6)
    # without a mask there is no FOV to measure: the image is left at its own scale
    assert scaled.detect(big, threshold=0.05).zoom == 1.0
