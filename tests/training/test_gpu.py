"""CUDA path (bf16 autocast + channels_last): runs only where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from training.events import read_events

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_training_on_cuda(tmp_path, make_tiny_config):
    from napari_gravity.core.model_io import load_model
    from training.cli import main

    cfg = make_tiny_config(tmp_path / "g.yaml", train__epochs=1)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--device", "cuda", "--no-progress"]) == 0
    start = read_events(run / "events.jsonl")[0]
    assert start["device"].startswith("cuda")
    assert start["amp"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert load_model(run / "model.safetensors").metadata["provenance"]["device"].startswith("cuda")
