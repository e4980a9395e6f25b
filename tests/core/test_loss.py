import math

import pytest
import torch

from napari_gravity.core import GravityLoss
from napari_gravity.core import loss as loss_mod
from napari_gravity.core.loss import assign

LN2 = math.log(2.0)
POS0 = 0.25 * 0.5**2 * LN2  # focal loss of a positive at p = 0.5
NEG0 = 0.75 * 0.5**2 * LN2  # focal loss of a negative at p = 0.5
GP = torch.tensor([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]])


def sl1(x, beta=1 / 9):
    x = abs(x)
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def zeros(b=1, n=4):
    return torch.zeros(b, n, requires_grad=True), torch.zeros(b, n, 2, requires_grad=True)


def test_one_lesion_hand_computed():
    logits, offsets = zeros()
    out = GravityLoss(d_h=5)(logits, offsets, GP, [torch.tensor([[1.0, 2.0]])])
    # point (0,0) at distance sqrt(5) <= 5 is the only positive
    assert out["n_pos"] == 1
    cls = POS0 + 3 * NEG0
    reg = (sl1(1 / 5) + sl1(2 / 5)) / 2
    assert out["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert out["reg"].item() == pytest.approx(reg, rel=1e-5)
    assert out["loss"].item() == pytest.approx(cls + 10 * reg, rel=1e-5)
    out["loss"].backward()
    assert logits.grad is not None and offsets.grad[0, 0].abs().sum() > 0
    assert offsets.grad[0, 1:].abs().sum() == 0  # only hooked points are regressed


def test_perfect_offset_has_zero_regression_loss():
    offsets = torch.zeros(1, 4, 2)
    offsets[0, 0] = torch.tensor([1 / 5, 2 / 5])
    out = GravityLoss(d_h=5)(torch.zeros(1, 4), offsets, GP, [torch.tensor([[1.0, 2.0]])])
    assert out["reg"].item() == pytest.approx(0.0, abs=1e-7)


def test_lesion_free_image():
    logits, offsets = zeros()
    out = GravityLoss(d_h=5)(logits, offsets, GP, [torch.zeros(0, 2)])
    assert out["n_pos"] == 0
    assert out["cls"].item() == pytest.approx(4 * NEG0, rel=1e-5)  # normalised by max(1, 0)
    assert out["reg"].item() == 0.0
    out["loss"].backward()  # still differentiable


def test_batch_normalisation_by_positives_of_the_whole_batch():
    logits, offsets = zeros(b=2)
    t = [torch.zeros(0, 2), torch.tensor([[0.0, 0.0], [10.0, 10.0]])]
    out = GravityLoss(d_h=5)(logits, offsets, GP, t)
    assert out["n_pos"] == 2
    # image 0: 4 negatives; image 1: 2 positives + 2 negatives; all over 2 positives
    assert out["cls"].item() == pytest.approx((4 * NEG0 + 2 * POS0 + 2 * NEG0) / 2, rel=1e-5)
    assert out["reg"].item() == pytest.approx(0.0, abs=1e-7)


def test_two_lesions_closer_than_dh():
    gp = torch.tensor([[float(y), float(x)] for y in range(0, 20, 2) for x in range(0, 20, 2)])
    lesions = torch.tensor([[8.0, 8.0], [9.0, 11.0]])  # 3.2 px apart, d_h = 5
    labels, assigned = assign(gp, lesions, 5.0)
    pos = labels > 0
    d = torch.cdist(gp, lesions)
    # every point within d_h of either lesion is positive, hooked to its nearest lesion
    assert torch.equal(pos, d.min(1).values <= 5.0)
    assert torch.equal(assigned[pos], d.argmin(1)[pos])
    assert set(assigned[pos].tolist()) == {0, 1}
    out = GravityLoss(d_h=5)(torch.zeros(1, len(gp)), torch.zeros(1, len(gp), 2), gp, [lesions])
    assert out["n_pos"] == int(pos.sum())


def test_force_assignment_when_no_point_is_within_dh():
    # lesion at (6, 4): distances 7.2, 7.2, 5.7, 7.2 -> its nearest point (10, 0) is forced
    labels, assigned = assign(GP, torch.tensor([[6.0, 4.0]]), d_h=2.0)
    assert labels.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert assigned.tolist() == [-1, -1, 0, -1]
    # two lesions: one hooks normally, the far one gets its nearest point forced
    labels, assigned = assign(GP, torch.tensor([[0.5, 0.5], [6.0, 9.0]]), d_h=2.0)
    assert labels.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert assigned.tolist() == [0, -1, -1, 1]


def test_ignore_band():
    gp = torch.tensor([[0.0, 0.0], [0.0, 4.0], [0.0, 6.5], [0.0, 20.0]])
    labels, _ = assign(gp, torch.tensor([[0.0, 1.0]]), d_h=3.0, ignore_gap=3.0)
    # distances 1 (pos), 3 (pos, <= d_h), 5.5 (in (3, 6]: ignored), 19 (neg)
    assert labels.tolist() == [1.0, 1.0, -1.0, 0.0]
    out = GravityLoss(d_h=3, ignore_gap=3)(
        torch.zeros(1, 4), torch.zeros(1, 4, 2), gp, [torch.tensor([[0.0, 1.0]])]
    )
    assert out["cls"].item() == pytest.approx((2 * POS0 + NEG0) / 2, rel=1e-5)


def test_chunked_distances_match(monkeypatch):
    g = torch.Generator().manual_seed(0)
    gp = torch.rand(5000, 2, generator=g) * 500
    t = torch.rand(37, 2, generator=g) * 500
    ref = assign(gp, t, 12.0)
    monkeypatch.setattr(loss_mod, "_CHUNK", 1000)
    got = assign(gp, t, 12.0)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_full_mammogram_scale_is_vectorised():
    import time

    from napari_gravity.core import gravity_points

    gp = torch.from_numpy(gravity_points((3328, 2560), 6)).float()
    g = torch.Generator().manual_seed(0)
    t = [torch.rand(100, 2, generator=g) * torch.tensor([3328.0, 2560.0])]
    n = len(gp)
    t0 = time.perf_counter()
    out = GravityLoss(d_h=6)(torch.zeros(1, n), torch.zeros(1, n, 2), gp, t)
    assert time.perf_counter() - t0 < 20.0  # a Python loop over 300k points would take minutes
    assert out["n_pos"] >= 100


def test_shape_errors():
    with pytest.raises(ValueError):
        GravityLoss(d_h=5)(torch.zeros(1, 4), torch.zeros(1, 3, 2), GP, [torch.zeros(0, 2)])
    with pytest.raises(ValueError):
        GravityLoss(d_h=5)(torch.zeros(2, 4), torch.zeros(2, 4, 2), GP, [torch.zeros(0, 2)])
    with pytest.raises(ValueError):
        GravityLoss(d_h=0)
