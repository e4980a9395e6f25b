"""Resume equivalence: a run interrupted mid-epoch and resumed from its checkpoint ends with the
same weights as the same run left alone (same seed, CPU, a tiny config, a few seconds)."""

from __future__ import annotations

import torch

from training.checkpoint import load_checkpoint
from training.config import load_config
from training.loop import StopFlag, train
from training.models import GravityAdapter


class StopAfter(StopFlag):
    """A stop request that arrives during step ``n`` (the loop polls once per step)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.polls = 0
        self.n = n

    def is_set(self) -> bool:
        self.polls += 1
        return self.polls >= self.n


_losses = GravityAdapter.losses


def _noisy_losses(self, net, images, targets):
    # a stochastic forward pass drawing from the global torch RNG (as dropout would): the resumed
    # run makes the same draws only if the checkpoint restores the RNG state
    return _losses(self, net, images + 0.05 * torch.randn_like(images), targets)


def _cfg(make_tiny_config, path):
    return load_config(
        make_tiny_config(
            path,
            train__epochs=2,
            train__max_steps_per_epoch=3,
            data__tiles_per_image=3,
            data__tile_size=48,
        )
    )


def test_interrupted_and_resumed_run_ends_with_the_same_weights(
    tmp_path, make_tiny_config, monkeypatch
):
    monkeypatch.setattr(GravityAdapter, "losses", _noisy_losses)
    cfg = _cfg(make_tiny_config, tmp_path / "tiny.yaml")
    kw = {"device": "cpu", "progress": False}
    whole = train(cfg, tmp_path / "whole", stop=StopFlag(), **kw)
    assert not whole.stopped and whole.epochs_run == 2

    cut = train(cfg, tmp_path / "cut", stop=StopAfter(2), **kw)
    assert cut.stopped and cut.epochs_run == 0
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (state["next_epoch"], state["next_step"]) == (1, 2)  # mid-epoch 1 of 3 steps
    resumed = train(cfg, tmp_path / "cut", resume=True, stop=StopFlag(), **kw)
    assert not resumed.stopped and resumed.epochs_run == 2

    a, b, c = whole.last_state, resumed.last_state, cut.last_state
    assert a.keys() == b.keys()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], c[k])]
    assert moved  # the steps after the interruption changed the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.threshold == whole.threshold
