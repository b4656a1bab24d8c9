"""Data-parallel training: 2 gloo processes under torchrun equal 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from interp.saes import load
from interp.saes.config import TrainConfig
from interp.saes.store import write_activation_cache
from interp.saes.train import train


def test_two_ranks_match_one_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    dictionary = torch.nn.functional.normalize(torch.randn(40, 24, generator=g), dim=1)
    acts = ((torch.rand(3000, 40, generator=g) < 0.08) * torch.rand(3000, 40, generator=g) * 3) @ dictionary
    write_activation_cache(acts, tmp_path / "acts", 3000, shard_rows=1000, progress=False)
    common = dict(site="x", d_sae=64, k=4, activations=str(tmp_path / "acts"), batch_size=128, buffer_batches=4,
                  steps=12, lr=3e-3, warmup_steps=2, log_every=4, checkpoint_every=6, progress=False)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in common.items() if k != "progress"] + ["--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "interp.saes.cli", "train", *flags, f"--checkpoint-dir={tmp_path / 'ddp'}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train(TrainConfig(**common, checkpoint_dir=str(tmp_path / "single")))
    ddp = load(tmp_path / "ddp" / "step_00000012" / "sae")
    for name, p in single.sae.state_dict().items():
        torch.testing.assert_close(ddp.state_dict()[name], p, rtol=1e-5, atol=1e-6)
    # checkpoint_every divides the step count: every rank must agree that the last step is already saved (rank 1
    # used to save again alone and wait in a barrier that rank 0 never entered)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["latest.json", "step_00000006", "step_00000012"]
