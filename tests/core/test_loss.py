import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_full_mammogram_scale(monkeypatch):
    """300k gravity points × 100 lesions: the loss is computed in distance blocks of bounded size
    (never the full N × M matrix) and every lesion is hooked."""
    from napari_gravity.core import gravity_points

    gp = torch.from_numpy(gravity_points((3328, 2560), 6)).float()
    g = torch.Generator().manual_seed(0)
    t = [torch.rand(100, 2, generator=g) * torch.tensor([3328.0, 2560.0])]
    n = len(gp)
    biggest = []
    sqdist = loss_mod._sqdist

    def spy(a, b):
        biggest.append(a.shape[0] * b.shape[0])
        return sqdist(a, b)

    monkeypatch.setattr(loss_mod, "_sqdist", spy)
    out = GravityLoss(d_h=6)(torch.zeros(1, n), torch.zeros(1, n, 2), gp, t)
    assert max(biggest) <= loss_mod._CHUNK < n * 100
    labels, assigned = assign(gp, t[0], 6.0)
    assert out["n_pos"] == int((labels > 0).sum())
    assert set(assigned[labels > 0].tolist()) == set(range(100))


def test_forced_point_never_steals_another_lesions_only_positive():
    # the example: lesion 0 hooks only point (0, 0); lesion 1 at (-4, -4) hooks nothing and
    # its nearest point is that same (0, 0). It must get another point, not take lesion 0's.
    labels, assigned = assign(GP, torch.tensor([[0.5, 0.5], [-4.0, -4.0]]), d_h=1)
    assert assigned[0] == 0
    assert set(assigned[labels > 0].tolist()) == {0, 1}
    # its next nearest points (0, 10) and (10, 0) tie at 14.6 px: the lower index wins
    assert assigned.tolist() == [0, 1, -1, -1] and labels.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_two_unhooked_lesions_sharing_a_nearest_point_both_get_one():
    t = torch.tensor([[-4.0, -4.0], [-4.0, -4.5]])  # both nearest to (0, 0), nothing within 1
    labels, assigned = assign(GP, t, d_h=1)
    assert set(assigned[labels > 0].tolist()) == {0, 1}
    assert int((labels > 0).sum()) == 2
    assert assigned[0] == 0  # the closer lesion (index 0, 5.66 px) gets the shared point


def test_forced_point_may_come_from_a_lesion_that_keeps_others():
    # lesion 0 hooks (0, 0) and (0, 10); lesion 1 at (0, -6) hooks nothing: its nearest point
    # (0, 0) can move to it because lesion 0 keeps (0, 10)
    labels, assigned = assign(GP, torch.tensor([[0.0, 5.0], [0.0, -6.0]]), d_h=5)
    assert assigned.tolist() == [1, 0, -1, -1] and labels.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_more_lesions_than_points_cover_as_many_as_possible():
    t = torch.tensor([[1.0, 1.0], [2.0, 2.0], [-3.0, 0.0], [12.0, 12.0], [5.0, 5.0]])
    labels, assigned = assign(GP, t, d_h=0.5)
    assert bool((labels > 0).all())
    assert len(set(assigned.tolist())) == 4  # 4 points: 4 of the 5 lesions get one each


def _check_hooking_invariants(gp, t, d_h, labels, assigned):
    n, m = gp.shape[0], t.shape[0]
    pos = labels > 0
    assert torch.equal(pos, assigned >= 0)
    assert bool(((labels == 0) | pos).all())
    d = torch.cdist(gp.double(), t.double())
    dmin, amin = d.min(1)
    hooked = dmin <= d_h + 1e-9
    near = dmin < d_h - 1e-6  # clear of float rounding at the d_h boundary
    # every point within d_h stays positive; every positive is hooked or forced
    assert bool(pos[near].all())
    counts = torch.bincount(assigned[pos], minlength=m)
    # THE invariant: every lesion has a positive whenever there are enough points
    assert int((counts > 0).sum()) == min(m, n)
    lonely = int((torch.bincount(amin[hooked], minlength=m) == 0).sum())
    assert int(pos.sum()) <= int(hooked.sum()) + lonely
    # moved = given to a lesion farther than its nearest one (by distance, not index: duplicated
    # lesions at one spot are equally near, and float32 vs float64 may pick another twin)
    d_assigned = d.gather(1, assigned.clamp(min=0).reshape(-1, 1)).squeeze(1)
    moved = hooked & pos & (d_assigned > dmin + 1e-5)
    assert int(moved.sum()) <= lonely
    # a forced lesion's point is its nearest point that was available: every point strictly
    # closer to it is someone's positive
    for les in range(m):
        own = torch.nonzero(assigned == les).flatten()
        if own.numel() == 1 and not bool(hooked[own[0]] and amin[own[0]] == les):
            closer = d[:, les] < d[own[0], les] - 1e-6
            assert bool(pos[closer].all())


@st.composite
def _scenes(draw):
    step = draw(st.floats(1.0, 8.0))
    ny, nx = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    jitter = draw(st.booleans())
    gp = torch.stack(
        torch.meshgrid(
            torch.arange(ny, dtype=torch.float32) * step,
            torch.arange(nx, dtype=torch.float32) * step,
            indexing="ij",
        ),
        -1,
    ).reshape(-1, 2)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if jitter:
        gp = gp + (torch.rand(gp.shape, generator=g) - 0.5) * step
    extent = torch.tensor([ny * step, nx * step])
    kind = draw(st.sampled_from(["uniform", "off_grid", "crowded", "duplicates"]))
    m = draw(st.integers(1, 12))
    if kind == "uniform":
        t = torch.rand(m, 2, generator=g) * extent
    elif kind == "off_grid":  # up to 3 steps outside the grid on every side
        t = torch.rand(m, 2, generator=g) * (extent + 6 * step) - 3 * step
    elif kind == "crowded":  # a tight cluster, often closer together than the points
        c = torch.rand(1, 2, generator=g) * extent
        t = c + torch.randn(m, 2, generator=g) * draw(st.floats(0.01, 1.5)) * step
    else:  # some lesions at exactly the same place
        base = torch.rand(max(1, m // 2), 2, generator=g) * extent
        t = base[torch.randint(0, base.shape[0], (m,), generator=g)]
    d_h = draw(st.floats(0.05, 2.0)) * step
    return gp, t, d_h


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenes())
def test_every_lesion_gets_a_positive_property(scene):
    gp, t, d_h = scene
    labels, assigned = assign(gp, t, d_h)
    _check_hooking_invariants(gp, t, d_h, labels, assigned)


def test_crowded_fallback_beyond_the_first_candidates():
    # 30 lesions on one spot over a 6×6 grid: each of the 8 first candidates of the later
    # lesions is already some lesion's only positive, so the search must widen
    gp = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1)
    gp = gp.reshape(-1, 2) * 4
    t = torch.full((30, 2), 10.0) + torch.linspace(0, 0.01, 30)[:, None]
    labels, assigned = assign(gp, t, d_h=0.5)
    _check_hooking_invariants(gp, t, 0.5, labels, assigned)
    assert len(set(assigned[labels > 0].tolist())) == 30


def test_shape_errors():
    with pytest.raises(ValueError):
        GravityLoss(d_h=5)(torch.zeros(1, 4), torch.zeros(1, 3, 2), GP, [torch.zeros(0, 2)])
    with pytest.raises(ValueError):
        GravityLoss(d_h=5)(torch.zeros(2, 4), torch.zeros(2, 4, 2), GP, [torch.zeros(0, 2)])
    with pytest.raises(ValueError):
        GravityLoss(d_h=0)
