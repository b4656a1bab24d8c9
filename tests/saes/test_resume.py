"""Kill a training process mid-run, resume it, and get the uninterrupted run's weights bit for bit (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from interp.saes.checkpoint import latest_checkpoint
from interp.saes.config import TrainConfig
from interp.saes.train import train

CRASH_AFTER_STEP_6 = """
import importlib, os, sys
train = importlib.import_module("interp.saes.train")  # the module (interp.saes.train is also a function's name)
cli = importlib.import_module("interp.saes.cli")
step = train._Run.train_step
def crashing_step(run):
    metrics = step(run)
    if run.step == 6:  # the process dies right after step 6, as a killed run would
        os._exit(86)
    return metrics
train._Run.train_step = crashing_step
sys.exit(cli.main(sys.argv[1:]))
"""
"""The SAE CLI in a child process whose training dies (``os._exit(86)``) right after step 6."""


def test_killed_run_resumes_bit_exactly(tiny_dir, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: {'abcdefgh'[i % 8] * (i % 5 + 1)} went {i * 3} miles."
                                 for i in range(80)))
    common = dict(site="blocks.1.hook_resid_post", d_sae=72, k=5, model=str(tiny_dir("llama")), dataset=str(text),
                  context_length=20, model_batch_size=3, batch_size=48, buffer_batches=3, steps=10, lr=3e-3,
                  warmup_steps=2, decay="cosine", lr_end=1e-4, dead_window=200, log_every=2, progress=False)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in common.items() if k != "progress"] + ["--no-progress"]
    crashed = tmp_path / "crashed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CRASH_AFTER_STEP_6, "train", *flags, f"--checkpoint-dir={crashed}",
                           "--checkpoint-every=4"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 86, proc.stderr[-3000:]
    assert latest_checkpoint(crashed).name == "step_00000004"  # step 6 finished, no checkpoint after step 4

    resumed = train(TrainConfig(**common, checkpoint_dir=str(crashed), checkpoint_every=4, resume=True))
    full = train(TrainConfig(**common, checkpoint_dir=str(tmp_path / "full"), checkpoint_every=4))
    assert resumed.steps == full.steps == 10
    for name, p in full.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], p), name
    assert resumed.history == full.history  # includes the steps logged by the killed process
    assert full.history[-1]["dead_fraction"] > 0  # the dead-latent counters (and AuxK) took part
