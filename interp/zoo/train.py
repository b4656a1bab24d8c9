"""Train the zoo's tiny Mamba-1 / Mamba-2 language models on the synthetic facts + copying corpus.

    python -m interp.zoo.train --arch mamba  --out interp/zoo/mamba1-facts
    python -m interp.zoo.train --arch mamba2 --out interp/zoo/mamba2-facts

Plain torch + Adam on CPU through Hugging Face's reference (no-kernel) path, one thread, seeded: the same command
gives the same weights. The output is an HF folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...)
plus ``facts.json`` (the fact table and templates) and ``metrics.json`` (held-out evaluation, training time),
written to a temporary folder beside ``--out`` and moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.atomic import atomic_dir
from interp.zoo import corpus
from interp.zoo.evaluate import evaluate

__all__ = ["TrainConfig", "model_config", "train", "main"]


@dataclass(frozen=True)
class TrainConfig:
    """How one zoo model is trained."""

    arch: str = "mamba"
    """``"mamba"`` (Mamba-1, ``MambaForCausalLM``) or ``"mamba2"`` (``Mamba2ForCausalLM``)."""
    steps: int = 1500
    """Optimizer steps."""
    batch: int = 32
    """Sequences per step."""
    seq_len: int = 40
    """Tokens per training sequence including ``<bos>`` (the HF Mamba-1 CPU scan loops over positions)."""
    lr: float = 3e-3
    """Peak Adam learning rate (linear warm-up over 5% of the steps, cosine decay to 10%)."""
    seed: int = 0
    """Seeds the corpus stream and the initialisation."""

    def __post_init__(self) -> None:
        if self.arch not in ("mamba", "mamba2"):
            raise ValueError(f"arch must be 'mamba' or 'mamba2'; got {self.arch!r}")
        for name in ("steps", "batch", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")


def model_config(arch: str, vocab_size: int):
    """The (tiny) HF config of a zoo model."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    if arch == "mamba":
        return tf.MambaConfig(
            hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8, **common
        )
    if arch == "mamba2":
        return tf.Mamba2Config(
            hidden_size=96, state_size=16, num_hidden_layers=3, expand=2, num_heads=8, head_dim=24, n_groups=2,
            conv_kernel=4, chunk_size=16, time_step_rank=8, **common,
        )
    raise ValueError(f"arch must be 'mamba' or 'mamba2'; got {arch!r}")


def _batch(rng: random.Random, tok, facts, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for _ in range(cfg.batch):
        text = corpus.train_sequence(rng, facts, cfg.seq_len - 1)
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]][: cfg.seq_len]
        rows.append(ids + [tok.pad_token_id] * (cfg.seq_len - len(ids)))
    tokens = torch.tensor(rows)
    labels = tokens.clone()
    labels[labels == tok.pad_token_id] = -100
    return tokens, labels


def _lr_at(step: int, cfg: TrainConfig) -> float:
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(cfg: TrainConfig, out: str | Path) -> dict:
    """Train a model as ``cfg`` says, save it to ``out`` (atomically) and return its metrics."""
    import transformers as tf

    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = corpus.build_tokenizer()
    facts = corpus.fact_table()
    hf_cfg = model_config(cfg.arch, len(tok))
    cls = tf.MambaForCausalLM if cfg.arch == "mamba" else tf.Mamba2ForCausalLM
    model = cls(hf_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"train {cfg.arch}")
    for step in bar:
        tokens, labels = _batch(rng, tok, facts, cfg)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = model(input_ids=tokens, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    metrics = evaluate(lambda t: model(input_ids=t).logits, tok)
    metrics.update(train_seconds=round(seconds, 1), train_cpu_seconds=round(cpu_seconds, 1),
                   final_loss=round(loss.item(), 4), config=asdict(cfg))
    _save(model, tok, facts, metrics, Path(out))
    return metrics


def _save(model, tok, facts, metrics: dict, out: Path) -> None:
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        table = {
            "facts": [asdict(f) for f in facts],
            "train_templates": corpus.TRAIN_TEMPLATES,
            "heldout_templates": corpus.HELDOUT_TEMPLATES,
        }
        (tmp / "facts.json").write_text(json.dumps(table, indent=1))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["mamba", "mamba2"], required=True)
    p.add_argument("--out", required=True, help="output folder (replaced if it exists)")
    defaults = TrainConfig()
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--seq-len", type=int, default=defaults.seq_len)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    a = p.parse_args(argv)
    cfg = TrainConfig(arch=a.arch, steps=a.steps, batch=a.batch, seq_len=a.seq_len, lr=a.lr, seed=a.seed)
    metrics = train(cfg, a.out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
