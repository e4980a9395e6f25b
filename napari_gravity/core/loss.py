"""The gravity loss (paper 000, section 3.3): focal classification + λ · smooth-L1 regression.

Hooking: a gravity point whose distance to its nearest lesion is ≤ d_h is positive and hooked
to that lesion. A lesion that hooked no point is force-assigned its nearest point that is not
another lesion's only positive (so every lesion has ≥ 1 positive whenever there are at least as
many points as lesions; see :func:`_force_assign`). With ``ignore_gap > 0`` the negatives in
the band (d_h, d_h + gap] are ignored (no classification loss).

Normalisation: the focal loss is summed over every (non-ignored) point of the batch and divided by
the number of positives in the whole batch (at least 1), so lesion-free images weigh like any other
image. The regression loss is the smooth-L1 between ``(lesion − point)/d_h`` and the predicted
offset, averaged over the positives of the batch and the two coordinates (as the reference code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 1 << 20  # elements of one distance block (points × lesions)


def _sqdist(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (g[:, :1] - t[:, 0]).square_() + (g[:, 1:] - t[:, 1]).square_()


def _nearest_lesion(gp: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: distance to and index of its nearest lesion (chunked over points, so
    300k points × M lesions never needs much memory)."""
    n, m = gp.shape[0], t.shape[0]
    rows = max(1, _CHUNK // max(m, 1))
    dmin = torch.empty(n, dtype=gp.dtype, device=gp.device)
    amin = torch.empty(n, dtype=torch.long, device=gp.device)
    for s in range(0, n, rows):
        torch.min(_sqdist(gp[s : s + rows], t), dim=1, out=(dmin[s : s + rows], amin[s : s + rows]))
    return dmin.sqrt_(), amin


def _k_nearest(gp: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
    """Per lesion: indices (M, k) of its k nearest points, nearest first (ties: lower index
    first). Chunked over points like :func:`_nearest_lesion`."""
    n, m = gp.shape[0], t.shape[0]
    k = min(k, n)
    rows = max(k, _CHUNK // max(m, 1))
    best_d = best_i = None
    for s in range(0, n, rows):
        d = _sqdist(gp[s : s + rows], t).T  # (M, rows)
        i = torch.arange(s, s + d.shape[1], device=gp.device).expand(m, -1)
        if best_d is not None:
            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
        best_d, j = d.topk(min(k, d.shape[1]), dim=1, largest=False, sorted=False)
        best_i = i.gather(1, j)
    o = best_i.argsort(dim=1)  # index order first, then a stable sort by distance
    best_d, best_i = best_d.gather(1, o), best_i.gather(1, o)
    return best_i.gather(1, best_d.argsort(dim=1, stable=True))


def _force_assign(
    gp: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, assigned: torch.Tensor
) -> None:
    """Give every lesion that hooked no point a positive, in place.

    Each such lesion (nearest first) takes its nearest point that is not the *only* positive of
    another lesion: a free point, or one taken from a lesion that keeps other positives. Among a
    lesion's k nearest points at most k − 1 can be sole positives when k ≥ M, so the search
    always succeeds while N ≥ M; with fewer points than lesions, min(N, M) lesions get one.
    """
    n, m = gp.shape[0], t.shape[0]
    counts = torch.bincount(assigned[assigned >= 0], minlength=m)
    lonely = torch.nonzero(counts == 0).flatten()
    if lonely.numel() == 0:
        return
    cand = _k_nearest(gp, t[lonely], 8)  # enough unless neighbours are crowded (fallback)
    first = _sqdist(gp[cand[:, 0]], t[lonely]).diagonal()
    for r in first.argsort(stable=True).tolist():
        les = int(lonely[r])
        c = cand[r]
        for attempt in range(2):
            own = assigned[c]
            ok = (own < 0) | (counts[own.clamp(min=0)] >= 2)
            hit = torch.nonzero(ok).flatten()
            if hit.numel() or c.numel() == n or attempt:
                break
            c = _k_nearest(gp, t[les : les + 1], int((counts == 1).sum()) + 1)[0]
        if hit.numel() == 0:
            continue  # every point is already some lesion's only positive (N < M)
        j = int(hit[0])
        p, a = int(c[j]), int(own[j])
        if a >= 0:
            counts[a] -= 1
        assigned[p] = les
        labels[p] = 1.0
        counts[les] += 1


def assign(
    gp: torch.Tensor, targets: torch.Tensor, d_h: float, ignore_gap: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hooking for one image.

    Returns ``labels`` (N,) float: 1 positive, 0 negative, −1 ignored; and ``assigned`` (N,) long:
    index of the hooked lesion for positives (−1 elsewhere).
    """
    n = gp.shape[0]
    labels = torch.zeros(n, dtype=gp.dtype, device=gp.device)
    assigned = torch.full((n,), -1, dtype=torch.long, device=gp.device)
    t = targets.to(gp.dtype).reshape(-1, 2)
    if t.shape[0] == 0:
        return labels, assigned
    dmin, amin = _nearest_lesion(gp, t)
    pos = dmin <= d_h
    if ignore_gap > 0:
        labels[(dmin > d_h) & (dmin <= d_h + ignore_gap)] = -1.0
    labels[pos] = 1.0
    assigned[pos] = amin[pos]
    _force_assign(gp, t, labels, assigned)
    return labels, assigned


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Element-wise sigmoid focal loss for labels in {0, 1} (ignored elements must be masked
    by the caller)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = p * labels + (1 - p) * (1 - labels)
    a_t = alpha * labels + (1 - alpha) * (1 - labels)
    return a_t * (1 - p_t).pow(gamma) * ce


def smooth_l1(x: torch.Tensor, beta: float) -> torch.Tensor:
    ax = x.abs()
    if beta <= 0:
        return ax
    return torch.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


class GravityLoss:
    """``GravityLoss(d_h)(logits (B,N), offsets (B,N,2), gp (N,2), targets)`` →
    ``dict(loss, cls, reg, n_pos)``; ``targets`` is a list of B tensors (Mi, 2) of (y, x)."""

    def __init__(
        self,
        d_h: float,
        alpha: float = 0.25,
        gamma: float = 2.0,
        lam: float = 10.0,
        ignore_gap: float = 0.0,
        beta: float = 1.0 / 9.0,
    ):
        if not d_h > 0:
            raise ValueError(f"GravityLoss: d_h must be > 0, got {d_h}")
        self.d_h = float(d_h)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.lam = float(lam)
        self.ignore_gap = float(ignore_gap)
        self.beta = float(beta)

    def __call__(
        self,
        logits: torch.Tensor,
        offsets: torch.Tensor,
        gp: torch.Tensor,
        targets: list[torch.Tensor] | tuple[torch.Tensor, ...],
    ) -> dict[str, torch.Tensor]:
        b, n = logits.shape
        if offsets.shape != (b, n, 2):
            raise ValueError(f"offsets shape {tuple(offsets.shape)} != {(b, n, 2)}")
        if gp.shape != (n, 2):
            raise ValueError(f"{gp.shape[0]} gravity points for {n} outputs")
        if len(targets) != b:
            raise ValueError(f"{len(targets)} target sets for a batch of {b}")
        gp = gp.to(device=logits.device, dtype=torch.float32)
        labels = torch.empty((b, n), dtype=torch.float32, device=logits.device)
        reg_target = []
        pos_index = []
        with torch.no_grad():
            for i, t in enumerate(targets):
                t = torch.as_tensor(t, dtype=torch.float32, device=logits.device).reshape(-1, 2)
                lab, asg = assign(gp, t, self.d_h, self.ignore_gap)
                labels[i] = lab
                pidx = torch.nonzero(lab > 0).flatten()
                if pidx.numel():
                    reg_target.append((t[asg[pidx]] - gp[pidx]) / self.d_h)
                    pos_index.append(pidx + i * n)
        n_pos = int((labels > 0).sum())
        norm = max(1.0, float(n_pos))
        lg = logits.float()
        valid = labels >= 0
        fl = focal_loss(lg, labels.clamp(min=0), self.alpha, self.gamma)
        cls = (fl * valid).sum() / norm
        if pos_index:
            idx = torch.cat(pos_index)
            pred = offsets.float().reshape(b * n, 2)[idx]
            tgt = torch.cat(reg_target)
            reg = smooth_l1(pred - tgt, self.beta).mean()
        else:
            reg = offsets.float().sum() * 0.0
        loss = cls + self.lam * reg
        return {"loss": loss, "cls": cls.detach(), "reg": reg.detach(), "n_pos": n_pos}
