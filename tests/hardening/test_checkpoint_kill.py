"""A training process SIGKILLed (from outside) in the middle of a checkpoint write: the next start in the same
checkpoint folder removes what the write left behind, and the resumed run equals an uninterrupted one bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from interp.saes.checkpoint import clean_stale_writes, latest_checkpoint, prepare_checkpoint_dir
from interp.saes.config import TrainConfig
from interp.saes.store import ActivationStore
from interp.saes.train import train

CONFIG = dict(site="blocks.0.hook_resid_post", d_sae=2048, k=8, batch_size=64, buffer_batches=4, steps=40,
              lr=1e-3, dead_window=256, checkpoint_every=1, log_every=5, progress=False, seed=3)

SCRIPT = textwrap.dedent("""
    import sys, torch
    from interp.saes.config import TrainConfig
    from interp.saes.store import ActivationStore
    from interp.saes.train import train
    torch.manual_seed(0)
    x = torch.randn(4096, 64)
    cfg = TrainConfig(**{CONFIG}, checkpoint_dir=sys.argv[1])
    train(cfg, store=ActivationStore.from_tensor(x, batch_size=cfg.batch_size, buffer_batches=cfg.buffer_batches,
                                                 seed=cfg.seed))
""").replace("{CONFIG}", repr(CONFIG))


def _store(cfg: TrainConfig) -> ActivationStore:
    torch.manual_seed(0)
    x = torch.randn(4096, 64)
    return ActivationStore.from_tensor(x, batch_size=cfg.batch_size, buffer_batches=cfg.buffer_batches, seed=cfg.seed)


def _leftovers(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def _kill_inside_a_write(root) -> list[str]:
    """Start a training process and SIGKILL it as soon as a temporary checkpoint folder exists; return what the
    kill left behind (empty if the write finished between the look and the kill)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(root)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if root.is_dir() and any(name.startswith(".step_") and name.endswith(".tmp") for name in os.listdir(root)):
                if latest_checkpoint(root) is not None:  # at least one complete checkpoint to resume from
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the training process ended on its own:\n{err[-3000:]}"
    return _leftovers(root)


@pytest.mark.slow
def test_killed_write_is_cleaned_at_the_next_start_and_resume_is_bit_exact(tmp_path):
    for attempt in range(10):
        root = tmp_path / f"run{attempt}"
        left = _kill_inside_a_write(root)
        if any(name.endswith(".tmp") for name in left):
            break
    else:
        pytest.fail("never caught a checkpoint write in the act in 10 tries")
    assert any(name.startswith(".step_") and name.endswith(".tmp") for name in left), left

    cfg = TrainConfig(**CONFIG, checkpoint_dir=str(root), resume=True)
    resumed = train(cfg, store=_store(cfg))
    assert _leftovers(root) == []  # removed when the run started; nothing new left behind
    full_cfg = TrainConfig(**CONFIG, checkpoint_dir=str(tmp_path / "full"))
    full = train(full_cfg, store=_store(full_cfg))
    assert resumed.steps == full.steps == CONFIG["steps"]
    for name, p in full.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], p), name
    assert resumed.history == full.history


def test_prepare_removes_only_stale_writes(tmp_path):
    root = tmp_path / "ckpt"
    cfg = TrainConfig(**{**CONFIG, "d_sae": 32, "steps": 3}, checkpoint_dir=str(root))
    train(cfg, store=_store(cfg))
    keep = sorted(p.name for p in root.iterdir())
    (root / ".step_00000009.abcd1234.tmp" / "sae").mkdir(parents=True)
    (root / ".step_00000009.abcd1234.tmp" / "trainer.safetensors").write_bytes(b"half a file")
    (root / ".step_00000002.x9.old" / "step_00000002").mkdir(parents=True)
    (root / ".latest.json.q1w2.tmp").write_text("{")
    (root / ".notes").write_text("a user's own hidden file")
    removed = prepare_checkpoint_dir(root)
    assert sorted(p.name for p in removed) == [".latest.json.q1w2.tmp", ".step_00000002.x9.old",
                                               ".step_00000009.abcd1234.tmp"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*keep, ".notes"])
    assert clean_stale_writes(root) == [] and clean_stale_writes(tmp_path / "missing") == []
    again = TrainConfig(**{**CONFIG, "d_sae": 32, "steps": 3}, checkpoint_dir=str(root), resume=True)
    assert train(again, store=_store(again)).steps == 3  # the kept checkpoints still resume
