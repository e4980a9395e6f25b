"""DDP on CPU (gloo): two processes hold identical weights after a few steps, equal to a
single-process run with the same global batch.

BatchNorm: per-process BN batch statistics would differ from those of the global batch, so the
check runs with ``train.freeze_bn: true`` (BN layers in eval mode) and GroupNorm heads; with
per-process BN the runs are equivalent only up to BN statistics (on CUDA use ``train.sync_bn``).
SGD rather than Adam: Adam's first update is ≈ lr·sign(g), which turns float round-off in
near-zero gradients into visible weight differences (seen: 1.6e-5 on 1e-3 updates); with SGD the
DDP and single-process weights agree to ~1e-7. The loss is normalised by the positives of the global batch (see training.loop), which is what
makes the two runs agree exactly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch


def test_ddp_two_processes_match_single_process(tmp_path, make_tiny_config):
    from training.config import load_config
    from training.loop import train

    cfg_path = make_tiny_config(
        tmp_path / "ddp.yaml",
        train__epochs=1,
        train__batch_size=4,
        train__max_steps_per_epoch=3,
        train__freeze_bn=True,
        train__optimizer="sgd",  # Adam's first steps amplify float noise in ~0 gradients
        train__lr=0.01,
        data__tiles_per_image=3,
    )
    out = tmp_path / "weights"
    out.mkdir()
    worker = Path(__file__).with_name("_ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(cfg_path), str(tmp_path / "ddp_run"), str(out), "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    single = train(
        load_config(cfg_path), tmp_path / "single_run", device="cpu", progress=False
    ).last_state
    init = train(
        load_config(cfg_path, ["train.lr=1e-12"]),
        tmp_path / "noop_run",
        device="cpu",
        progress=False,
    ).last_state
    moved = 0
    for k, v in w0.items():
        assert torch.equal(v, w1[k]), f"ranks differ at {k}"
        if v.is_floating_point():
            torch.testing.assert_close(
                v, single[k], rtol=1e-4, atol=1e-6, msg=f"DDP vs single differ at {k}"
            )
            moved += int(not torch.allclose(v, init[k], atol=1e-7))
    assert moved > 10  # the weights really were trained
