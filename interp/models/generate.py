"""Text generation for every hooked model: greedy or sampled, with the active hooks firing at every step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["generate", "RETURN_TYPES"]

RETURN_TYPES = ("tokens", "str", "input")


@torch.no_grad()
def generate(model: HookedModel, tokens, max_new_tokens: int = 10, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             freq_penalty: float = 0.0, seed: int | None = None, stop_at_eos: bool = True,
             eos_token_id: int | None = None, attention_mask: Tensor | None = None, use_cache: bool | None = None,
             use_past_kv_cache: bool | None = None, prepend_bos: bool | None = None, padding_side: str | None = None,
             return_type: str = "tokens", progress: bool | None = None, verbose: bool | None = None):
    """Extend ``tokens`` (ids ``[batch, pos]`` or text; a list of strings is padded on the left) by up to
    ``max_new_tokens`` tokens; returns ``[batch, pos + new]`` ids (see ``return_type``).

    Greedy by default; ``do_sample=True`` samples from ``softmax(logits / temperature)``, optionally restricted to
    the ``top_k`` most likely tokens or the smallest set holding ``top_p`` of the mass; ``seed`` makes sampling
    reproducible. ``freq_penalty`` subtracts ``freq_penalty`` times the number of times each token already occurs in
    the row (real tokens only, the prompt included) from the logits (after the division by ``temperature``, as in
    TransformerLens). With ``stop_at_eos`` a row that produced the EOS token is finished (it is extended with EOS)
    and generation stops when every row is. Hooks active around the call, and persistent hooks, fire at every step.
    With ``use_cache`` (the default), models that keep a key/value cache (Hugging Face transformers) run only the
    new position at each step, so hooks see ``pos = 1`` activations after the first step, as in TransformerLens;
    ``use_cache=False`` runs the whole sequence each step.

    ``return_type``: ``"tokens"`` (the ids, the default), ``"str"`` (the decoded rows, special tokens and padding
    left out: a string for a string, else a list with one string per row) or ``"input"`` (the input's kind: text
    in, text out; ids in, ids out). ``progress`` shows a progress bar.

    TransformerLens's keywords are accepted: ``verbose`` (= ``progress``), ``use_past_kv_cache`` (= ``use_cache``),
    ``prepend_bos`` (text input: add the BOS token, default True; ignored for ids), ``padding_side`` (``"left"`` or
    ``"right"``; text is always padded on the left, as TransformerLens does for batches). Deliberate differences
    from ``HookedTransformer.generate``: greedy by default (``do_sample=False``; TransformerLens samples), returning
    ids by default (``return_type="tokens"``; TransformerLens's default is ``"input"``), no progress bar by default,
    ``freq_penalty`` applied when decoding greedily too (TransformerLens ignores it then), and ``"str"`` of ids
    always a list (TransformerLens returns a bare string for a one-row batch).
    """
    use_cache, progress = _aliases(use_cache, use_past_kv_cache, progress, verbose)
    _check_sampling(max_new_tokens, temperature, top_k, top_p, freq_penalty)
    if return_type not in RETURN_TYPES:
        raise ValueError(f"return_type must be one of {', '.join(map(repr, RETURN_TYPES))}; got {return_type!r}")
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side must be 'left', 'right' or None; got {padding_side!r}")
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise TypeError(f"prepend_bos must be True, False or None; got {prepend_bos!r}")
    text = isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and bool(tokens)
                                       and isinstance(tokens[0], str))
    as_text = return_type == "str" or (return_type == "input" and text)
    if as_text:
        model._need_tokenizer()
    single = isinstance(tokens, str)
    if text:
        if attention_mask is not None:
            raise ValueError("attention_mask: pass it with token ids, not with text")
        tokens, attention_mask = model.to_tokens(tokens, prepend_bos=prepend_bos is not False, padding_side="left",
                                                 return_attention_mask=True)
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
    with model._registry.running():  # passes of this model: its persistent hooks fire at every step
        for _ in tqdm(range(max_new_tokens), desc="generate", disable=not progress, leave=False):
            if use_cache:
                logits, state = model._next_logits(tokens, mask, state)
            else:
                logits = model._logits(tokens, mask)[:, -1]
            logits = logits.float() / temperature if do_sample else logits.float()
            if freq_penalty:
                logits = logits - freq_penalty * _counts(tokens, mask, logits.shape[-1])
            new = _choose(logits, do_sample, top_k, top_p, gen)
            if stop_at_eos:
                new = torch.where(finished, torch.full_like(new, eos_token_id), new)
                finished |= new == eos_token_id
            tokens = torch.cat([tokens, new[:, None]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            if stop_at_eos and bool(finished.all()):
                break
    if not as_text:
        return tokens
    tok = model._need_tokenizer()
    rows = [row if mask is None else row[mask[i].bool()] for i, row in enumerate(tokens)]
    out = [tok.decode(row.tolist(), skip_special_tokens=True) for row in rows]
    return out[0] if single else out


def _aliases(use_cache, use_past_kv_cache, progress, verbose) -> tuple[bool, bool]:
    """``(use_cache, progress)`` from this toolkit's keywords and TransformerLens's aliases of them."""
    if progress is not None and verbose is not None:
        raise TypeError("pass progress= or verbose= (TransformerLens's name for it), not both")
    if use_cache is not None and use_past_kv_cache is not None and bool(use_cache) != bool(use_past_kv_cache):
        raise ValueError(f"use_cache={use_cache!r} and use_past_kv_cache={use_past_kv_cache!r} disagree; they are "
                         "the same switch (use_past_kv_cache is TransformerLens's name): pass one")
    for value, arg in ((use_cache, "use_cache"), (use_past_kv_cache, "use_past_kv_cache"), (progress, "progress"),
                       (verbose, "verbose")):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{arg} must be True or False; got {value!r}")
    cache = use_cache if use_cache is not None else use_past_kv_cache if use_past_kv_cache is not None else True
    show = progress if progress is not None else bool(verbose)
    return cache, show


def _check_sampling(max_new_tokens, temperature, top_k, top_p, freq_penalty) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int; got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None; got {top_p!r}")
    if isinstance(freq_penalty, bool) or not isinstance(freq_penalty, (int, float)) \
            or not abs(freq_penalty) < float("inf"):
        raise ValueError(f"freq_penalty must be a finite number; got {freq_penalty!r}")


def _counts(tokens: Tensor, mask: Tensor | None, d_vocab: int) -> Tensor:
    """``[batch, d_vocab]``: how often each token occurs among each row's real tokens."""
    weight = torch.ones_like(tokens, dtype=torch.float32) if mask is None else mask.float()
    return torch.zeros(tokens.shape[0], d_vocab, device=tokens.device).scatter_add_(1, tokens, weight)


def _choose(logits: Tensor, do_sample: bool, top_k: int | None, top_p: float | None, gen: torch.Generator) -> Tensor:
    """The next token of each row from ``logits`` (already divided by the temperature when sampling)."""
    if not do_sample:
        return logits.argmax(-1)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)
