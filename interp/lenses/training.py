"""Training a tuned lens (Belrose et al. 2023, section 3): each layer's translator minimises
``KL(p_final || p_lens_l)`` averaged over the tokens of a text sample; the per-layer losses are summed (the
translators are independent, so each layer's gradient is its own loss's). The model is frozen and run once per
step; each layer's loss is back-propagated on its own (``torch.autograd.grad`` to the lens's parameters only), so
memory holds one layer's ``[tokens, d_vocab]`` logits at a time and the model's ``.grad`` is never touched.

Data: ``tokens [n_seq, ctx]``, or the builtin offline corpus (standard-library docstrings, ``pack_texts``). A
seeded shuffle splits rows into training and held-out; step ``s`` reads a fixed slice of a per-epoch seeded
permutation, so a resumed run sees exactly the batches an uninterrupted one would. With ``checkpoint`` the lens and
optimizer state are saved atomically every ``checkpoint_every`` steps and a later call with the same configuration
continues from there (bit-exact on the same machine).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from interp.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json

__all__ = ["TrainConfig", "train_tuned_lens", "split_tokens", "lens_loss", "corpus_tokens"]


@dataclass(frozen=True)
class TrainConfig:
    """How a tuned lens is trained."""

    steps: int = 10
    """Optimizer steps (10 x 4 x 128 tokens: about 4 minutes for SmolLM2 on 2 CPU cores)."""
    batch_size: int = 4
    """Rows of ``context_length`` tokens per step."""
    context_length: int = 128
    """Tokens per row (builtin corpus)."""
    lr: float = 5e-4
    """Adam learning rate. Adam's first steps move every entry of ``A_l`` by about ``lr``: at 2e-3 the last layers
    of SmolLM2 (already close to the output) got worse than the identity; plain SGD as in Belrose et al. (lr 1,
    Nesterov) diverged here without their loss scaling."""
    weight_decay: float = 0.0
    """Adam(W) weight decay on the translators (decays towards the identity)."""
    heldout: float = 0.1
    """Fraction of rows held out for evaluation (0: none)."""
    max_rows: int | None = None
    """Use at most this many rows of the data (None: all; the builtin corpus is cut to what the run needs)."""
    seed: int = 0
    """Seed of the train/held-out split and the batch order."""
    checkpoint_every: int = 10
    """Steps between checkpoints (with ``checkpoint``)."""

    def __post_init__(self) -> None:
        from interp.checks import check_int

        check_int(self.steps, "steps", lo=1)
        check_int(self.batch_size, "batch_size", lo=1)
        check_int(self.context_length, "context_length", lo=2)
        check_int(self.checkpoint_every, "checkpoint_every", lo=1)
        check_int(self.seed, "seed")
        if self.max_rows is not None:
            check_int(self.max_rows, "max_rows", lo=2)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if not (isinstance(self.heldout, (int, float)) and 0 <= self.heldout < 1):
            raise ValueError(f"heldout must be a fraction in [0, 1); got {self.heldout!r}")


def corpus_tokens(model, rows: int, context_length: int) -> Tensor:
    """About ``rows`` rows of the builtin stdlib-docstring corpus, packed to ``context_length`` tokens."""
    from interp.saes.tokens import builtin_corpus, pack_texts

    texts = builtin_corpus(max_chars=max(20_000, rows * context_length * 6))
    return pack_texts(texts, model.tokenizer, context_length)


def split_tokens(tokens: Tensor, heldout: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train, heldout)`` rows of ``tokens`` after a seeded shuffle; at least one row each when ``heldout > 0``."""
    n = tokens.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = 0 if heldout == 0 else min(n - 1, max(1, round(n * heldout)))
    if n - k < 1:
        raise ValueError(f"tokens has {n} rows: too few to split (heldout={heldout})")
    return tokens[order[k:]], tokens[order[:k]]


def _batch(train: Tensor, step: int, batch_size: int, seed: int) -> Tensor:
    """The rows step ``step`` trains on: slice ``step % per_epoch`` of epoch ``step // per_epoch``'s permutation."""
    per_epoch = max(1, train.shape[0] // batch_size)
    epoch, i = divmod(step, per_epoch)
    order = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch + 1))
    return train[order[i * batch_size:(i + 1) * batch_size]]


def lens_loss(model, lens, h: Tensor, layer: int, final_logprobs: Tensor) -> Tensor:
    """Mean over tokens of ``KL(p_final || p_lens)`` for stream ``h [..., d_model]`` entering block ``layer``."""
    w_u, b_u = model.W_U.detach(), model.b_U.detach()
    q = (model.apply_ln_final(lens.translate(h, layer)) @ w_u + b_u).float().log_softmax(-1)
    return (final_logprobs.exp() * (final_logprobs - q)).sum(-1).mean()


def _step_grads(model, lens, rows: Tensor) -> Tensor:
    """Set ``lens.weight.grad`` / ``lens.bias.grad`` for one batch; returns the per-layer losses ``[n_layers]``."""
    from interp.lenses.tuned import resid_stack

    with torch.no_grad():
        stack, _ = resid_stack(model, rows, apply_ln=False)
        final = (model.apply_ln_final(stack[-1]) @ model.W_U + model.b_U).float().log_softmax(-1)
    gw, gb = torch.zeros_like(lens.weight), torch.zeros_like(lens.bias)
    losses = torch.zeros(lens.n_layers)
    for layer in range(lens.n_layers):
        loss = lens_loss(model, lens, stack[layer], layer, final)
        w, b = torch.autograd.grad(loss, [lens.weight, lens.bias])
        gw += w
        gb += b
        losses[layer] = loss.detach().cpu()
    lens.weight.grad, lens.bias.grad = gw, gb
    return losses


def _optimizer(lens, config: TrainConfig):
    return torch.optim.AdamW([lens.weight, lens.bias], lr=config.lr, weight_decay=config.weight_decay)


def _fingerprint(config: TrainConfig, train: Tensor, info: dict) -> dict:
    return {"config": asdict(config), "model": info, "train_rows": list(train.shape),
            "train_sum": int(train.sum()), "train_head": train[:2, :8].tolist()}


def _save_checkpoint(path: Path, lens, opt, step: int, losses: list, fingerprint: dict, seconds: float) -> None:
    tensors = {"weight": lens.weight.detach(), "bias": lens.bias.detach()}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"opt.{i}.{key}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    with atomic_dir(path) as tmp:
        atomic_save_safetensors(tensors, tmp / "state.safetensors")
        atomic_write_json({"step": step, "losses": losses, "seconds": seconds, "fingerprint": fingerprint},
                          tmp / "progress.json")


def _load_checkpoint(path: Path, lens, opt, fingerprint: dict) -> tuple[int, list, float]:
    from interp.files import load_safetensors, read_json_object

    progress = read_json_object(path / "progress.json", "a tuned-lens training checkpoint")
    if json.loads(json.dumps(fingerprint)) != progress.get("fingerprint"):
        raise ValueError(f"checkpoint {path} was written by a run with another configuration, model or data; "
                         "remove it or pass a fresh checkpoint folder")
    tensors = load_safetensors(path / "state.safetensors")
    with torch.no_grad():
        lens.weight.copy_(tensors.pop("weight"))
        lens.bias.copy_(tensors.pop("bias"))
    state = opt.state_dict()
    for name, value in tensors.items():
        _, i, key = name.split(".", 2)
        state["state"].setdefault(int(i), {})[key] = value.to(lens.weight.device) if key != "step" else value
    opt.load_state_dict(state)
    return int(progress["step"]), list(progress["losses"]), float(progress.get("seconds", 0.0))


def train_tuned_lens(model, tokens: Tensor | None, config: TrainConfig, *, checkpoint: str | Path | None = None,
                     progress: bool = True):
    """Train a :class:`~interp.lenses.TunedLens` for ``model``; its ``training_info`` records steps, tokens and
    seconds, and ``heldout`` the held-out :class:`~interp.lenses.LensEval` (tuned vs logit lens)."""
    from tqdm.auto import tqdm

    from interp.lenses.tuned import TunedLens

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    if tokens is None:
        want = config.max_rows or int(config.steps * config.batch_size / max(1e-9, 1 - config.heldout)) + 1
        tokens = corpus_tokens(model, want, config.context_length)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int):
        raise ValueError(f"tokens must be integer ids [n_seq, ctx]; got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    if config.max_rows is not None:
        tokens = tokens[:config.max_rows]
    train, heldout = split_tokens(tokens.long().cpu(), config.heldout, config.seed)
    lens = TunedLens.identity(model)
    opt = _optimizer(lens, config)
    fingerprint = _fingerprint(config, train, lens.model_info)
    step, losses, seconds = 0, [], 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and (ckpt / "progress.json").is_file():
        step, losses, seconds = _load_checkpoint(ckpt, lens, opt, fingerprint)
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="tuned lens", disable=not progress)
    while step < config.steps:
        rows = _batch(train, step, config.batch_size, config.seed).to(model.device)
        opt.zero_grad(set_to_none=True)
        layer_losses = _step_grads(model, lens, rows)
        opt.step()
        step += 1
        losses.append(float(layer_losses.sum()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if ckpt is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            _save_checkpoint(ckpt, lens, opt, step, losses, fingerprint, seconds + time.perf_counter() - start)
    bar.close()
    seconds += time.perf_counter() - start
    lens.training_info = {"config": asdict(config), "steps": step, "train_tokens": step * config.batch_size
                          * train.shape[1], "train_rows": int(train.shape[0]), "heldout_rows": int(heldout.shape[0]),
                          "seconds": round(seconds, 2), "loss_first": losses[0] if losses else None,
                          "loss_last": losses[-1] if losses else None, "threads": torch.get_num_threads()}
    if heldout.shape[0]:
        lens.heldout = lens.evaluate(model, heldout, batch_size=config.batch_size, progress=progress)
    return lens
