"""Run a tiny training under DDP (gloo, CPU) in N spawned processes; each rank saves its final
weights to OUT/rank{r}.pt. Used by test_ddp.py: ``python _ddp_worker.py CONFIG RUN_DIR OUT N``."""

from __future__ import annotations

import os
import socket
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, cfg_path: str, run_dir: str, out: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    import torch

    torch.set_num_threads(1)
    from training.config import load_config
    from training.loop import train

    res = train(load_config(cfg_path), run_dir, device="cpu", progress=False)
    torch.save(res.last_state, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    import torch.multiprocessing as mp

    cfg, run_dir, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    mp.spawn(_worker, args=(n, cfg, run_dir, out, _free_port()), nprocs=n, join=True)
