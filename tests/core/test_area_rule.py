"""The area rule: γ is raised on images with more tissue than the validation images, so the
expected false positives per whole image stay at the calibration's target (hand-computed), and
the Predictor applies it per image where no threshold is given."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.core import Predictor
from napari_gravity.core.config import area_rules, area_threshold

# four validation false positives over 400 px of tissue, at most 1 FP per image wanted
RULE = {"fp_scores": np.array([0.9, 0.8, 0.7, 0.6]), "tissue_px": 400.0, "target_fppi": 1.0}


def test_area_threshold_by_hand():
    assert area_threshold(0.5, RULE, 100.0) == 0.5  # 4 FPs allowed: all 4 fit, γ as stored
    g = area_threshold(0.5, RULE, 200.0)  # 2 allowed: just above the third FP score
    assert 0.7 < g < 0.7 + 1e-9
    assert sum(v >= g for v in RULE["fp_scores"]) == 2
    g = area_threshold(0.5, RULE, 1000.0)  # 0.4 allowed: above every validation FP
    assert g > 0.9 and sum(v >= g for v in RULE["fp_scores"]) == 0
    assert area_threshold(0.95, RULE, 200.0) == 0.95  # never below the stored γ
    assert area_threshold(0.5, None, 1e9) == 0.5 and area_threshold(0.5, RULE, None) == 0.5
    two = {**RULE, "target_fppi": 2.0}  # twice the target: twice the allowance
    assert area_threshold(0.5, two, 400.0) == area_threshold(0.5, RULE, 200.0)


def test_area_rules_read_from_metadata_and_skip_broken_ones():
    md = {
        "calibration": {"area_rule": {**RULE, "fp_scores": [0.6, 0.9, 0.7, 0.8]}},
        "tta": {"d8": {"area_rule": {"fp_scores": [0.5], "tissue_px": -1, "target_fppi": 1}}},
    }
    rules = area_rules(md)
    assert set(rules) == {"off"}  # the d8 rule has a negative area
    assert rules["off"]["fp_scores"].tolist() == [0.9, 0.8, 0.7, 0.6]  # sorted, best first
    assert area_rules({}) == {} and area_rules(None) == {}


@pytest.fixture(scope="module")
def net(paper_net):
    """The shared random paper-heads model (``conftest.paper_net``)."""
    return paper_net


def test_predictor_raises_gamma_on_a_large_image_only(net):
    rng = np.random.default_rng(0)
    small, large = rng.random((64, 64)), rng.random((256, 256))
    scores = np.sort(Predictor(net, device="cpu").raw(large).scores)[::-1]
    base = float(scores[400])  # a stored γ with 400 candidates above it on the large image
    rule = {"fp_scores": scores[:50], "tissue_px": 10 * 64 * 64, "target_fppi": 1.0}
    pred = Predictor(net, device="cpu", area_rules={"off": rule})
    pred.config = pred.config.replace(threshold=base)
    # 64² px: 10 FPs allowed, within the 50 stored → γ above the 11th validation FP score
    want_small = area_threshold(base, pred.area_rules["off"], 64 * 64)
    want_large = area_threshold(base, pred.area_rules["off"], 256 * 256)
    assert base < want_small < want_large  # 0.625 FPs allowed on the large one: above the 1st
    assert pred.params_for("off", 256 * 256)["threshold"] == want_large
    det = pred.detect(large)
    ref = pred.from_raw(pred.raw(large), threshold=want_large)
    np.testing.assert_array_equal(det.points, ref.points)
    assert (det.scores >= want_large).all()
    got = pred.detect(small)
    np.testing.assert_array_equal(
        got.points, pred.from_raw(pred.raw(small), threshold=want_small).points
    )
    # a mask counts only its pixels: a quarter of the large image is the area of 128²
    mask = np.zeros((256, 256), bool)
    mask[:128, :128] = True
    assert pred.params_for("off", pred.tissue_area(mask.shape, mask))["threshold"] == (
        area_threshold(base, pred.area_rules["off"], 128 * 128)
    )
    # an explicit threshold is used as given
    assert len(pred.detect(large, threshold=base)) >= len(det)
