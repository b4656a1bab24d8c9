"""Text generation for every hooked model: greedy or sampled, with the active hooks firing at every step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["generate"]


@torch.no_grad()
def generate(model: HookedModel, tokens, max_new_tokens: int = 10, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_at_eos: bool = True, eos_token_id: int | None = None, attention_mask: Tensor | None = None,
             use_cache: bool = True, progress: bool = False) -> Tensor:
    """Extend ``tokens`` (ids ``[batch, pos]`` or text; a list of strings is padded on the left) by up to
    ``max_new_tokens`` tokens; returns ``[batch, pos + new]`` ids.

    Greedy by default; ``do_sample=True`` samples from ``softmax(logits / temperature)``, optionally restricted to
    the ``top_k`` most likely tokens or the smallest set holding ``top_p`` of the mass; ``seed`` makes sampling
    reproducible. With ``stop_at_eos`` a row that produced the EOS token is finished (it is extended with EOS) and
    generation stops when every row is. Hooks active around the call fire at every step. With ``use_cache`` (the
    default), models that keep a key/value cache (Hugging Face transformers) run only the new position at each
    step, so hooks see ``pos = 1`` activations after the first step, as in TransformerLens; ``use_cache=False``
    runs the whole sequence each step.
    """
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int; got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None; got {top_p!r}")
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        if attention_mask is not None:
            raise ValueError("attention_mask: pass it with token ids, not with text")
        tokens, attention_mask = model.to_tokens(tokens, padding_side="left", return_attention_mask=True)
    tokens, mask = model._prepare(tokens, attention_mask)
    if mask is not None and bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("generate needs left padding (new tokens follow each row's last real token); got an "
                         "attention_mask with padding on the right")
    if eos_token_id is None and stop_at_eos:
        eos_token_id = getattr(model.tokenizer, "eos_token_id", None)
        if eos_token_id is None:
            raise ValueError("stop_at_eos needs an EOS token: pass eos_token_id= or stop_at_eos=False")
    gen = torch.Generator(device=tokens.device)
    if seed is not None:
        gen.manual_seed(seed)
    elif do_sample:
        gen.seed()
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    state = None
    for _ in tqdm(range(max_new_tokens), desc="generate", disable=not progress, leave=False):
        if use_cache:
            logits, state = model._next_logits(tokens, mask, state)
        else:
            logits = model._logits(tokens, mask)[:, -1]
        new = _choose(logits.float(), do_sample, temperature, top_k, top_p, gen)
        if stop_at_eos:
            new = torch.where(finished, torch.full_like(new, eos_token_id), new)
            finished |= new == eos_token_id
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        if stop_at_eos and bool(finished.all()):
            break
    return tokens


def _choose(logits: Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
            gen: torch.Generator) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)
