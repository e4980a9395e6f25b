"""The operating threshold a trained model ships with: re-derived from scratch on the run's
validation images with the exported model, it must be the lowest score whose detections stay
within ``eval.target_fppi`` false positives per image (the rule of ``threshold_at``)."""

from __future__ import annotations

import numpy as np

from napari_gravity.core.model_io import read_model_metadata
from napari_gravity.core.predictor import Predictor
from napari_gravity.evaluation import match_image
from napari_gravity.evaluation.froc import DUPLICATE, FP
from training import data as tdata
from training.config import load_config
from training.events import read_events


def test_shipped_threshold_is_the_validation_operating_point(trained_run):
    cfg = load_config(trained_run / "config.yaml")
    model_file = trained_run / "model.safetensors"
    thr = read_model_metadata(model_file)["threshold"]
    done = read_events(trained_run / "events.jsonl")[-1]
    assert done["event"] == "done" and done["threshold"] == thr
    pred = Predictor.from_file(model_file, device="cpu")
    assert pred.config.threshold == thr  # the default γ of every later detection

    # the validation images of the run, detected again with the exported (best-epoch) model
    split = tdata.open_split(cfg.data, trained_run, seed=cfg.train.seed)
    norm = cfg.net.normalization
    val = [tdata.prepare(r, norm, cfg.data.use_masks, keep_raw=True) for r in split.val]
    assert val and sum(len(p.points) for p in val) > 0
    scores, is_fp = [], []
    for p in val:
        d = pred.detect(p.raw, mask=p.mask, threshold=cfg.eval.min_score)
        m = match_image(d.points, d.scores, p.points, p.radii, mask=p.mask)
        scores.append(d.scores)
        is_fp.append(np.isin(m.labels, [FP, DUPLICATE]))  # duplicates count as FPs (default)
    scores, is_fp = np.concatenate(scores), np.concatenate(is_fp)
    assert len(scores) > 0  # the check below is not vacuous

    target = cfg.eval.target_fppi

    def fppi(t: float) -> float:
        return float(is_fp[scores >= t].sum()) / len(val)

    lower = np.unique(scores[scores < thr])
    if thr < 1.0 or fppi(float(scores.max())) <= target:
        # thr is one of the scores, within budget, and the next lower score is over budget
        assert np.any(scores == thr)
        assert fppi(thr) <= target
        assert len(lower) == 0 or fppi(float(lower[-1])) > target
    else:  # even the best detection is over budget: the strict threshold 1.0 is shipped
        assert thr == 1.0
