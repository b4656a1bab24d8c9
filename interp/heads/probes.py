"""Probe inputs the head detectors build from a model's own vocabulary: token pools, repeated random tokens
(Olsson et al. 2022) and random order-2 Markov chains (Akyürek et al. 2024).

Every builder takes a ``seed`` and returns the same ids for the same model, arguments and seed. Random tokens are
drawn from :func:`token_pool`: the ids the tokenizer can produce (all of ``0..d_vocab-1`` without a tokenizer), less
its special tokens (BOS, EOS, padding, ...). A BOS token is prepended when the tokenizer has one (the toolkit's
``prepend_bos`` convention), so position 0 is never a probe token.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["token_pool", "bos_id", "with_bos", "repeated_tokens", "markov_tokens", "generator"]


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (checked to be an int)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def bos_id(model) -> int | None:
    """The BOS id of the model's tokenizer, or None (no tokenizer, or none defined)."""
    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return int(bos) if bos is not None else None


def token_pool(model, exclude: Tensor | list[int] | None = None) -> Tensor:
    """Ids usable as random probe tokens: ``0..min(d_vocab, len(tokenizer)) - 1`` minus the tokenizer's special
    ids and ``exclude``; ``LongTensor[n]`` sorted."""
    tok = model.tokenizer
    n = model.d_vocab
    special: set[int] = set()
    if tok is not None:
        try:
            n = min(n, len(tok))
        except TypeError:
            pass
        special = {int(i) for i in (getattr(tok, "all_special_ids", None) or [])}
    drop = special | {int(i) for i in (exclude.tolist() if isinstance(exclude, Tensor) else exclude or [])}
    keep = torch.ones(n, dtype=torch.bool)
    idx = [i for i in drop if 0 <= i < n]
    if idx:
        keep[idx] = False
    return keep.nonzero().flatten()


def with_bos(model, rows: Tensor) -> Tensor:
    """``rows [batch, pos]`` with the BOS id prepended to each row (unchanged if the tokenizer has none)."""
    bos = bos_id(model)
    if bos is None:
        return rows
    return torch.cat([rows.new_full((rows.shape[0], 1), bos), rows], dim=1)


def _check_size(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return value


def repeated_tokens(model, batch: int, half: int, *, seed: int = 0) -> Tensor:
    """``[r_1..r_L, r_1..r_L]`` per row (Olsson et al. 2022), BOS first when the tokenizer has one:
    ``LongTensor[batch, (1) + 2 * half]``. Each half holds ``half`` distinct tokens from :func:`token_pool`, so the
    only earlier occurrence of a second-half token is its copy ``half`` positions back."""
    _check_size("batch", batch)
    _check_size("half", half, 2)
    pool = token_pool(model)
    if len(pool) < half:
        raise ValueError(f"half={half} needs {half} distinct tokens but this model's vocabulary offers {len(pool)} "
                         "(special tokens excluded); pass a smaller half length")
    g = generator(seed)
    rows = torch.stack([pool[torch.randperm(len(pool), generator=g)[:half]] for _ in range(batch)])
    return with_bos(model, torch.cat([rows, rows], dim=1)).to(model.device)


def markov_tokens(model, batch: int, length: int, *, symbols: int = 6, stickiness: float = 0.6,
                  seed: int = 0) -> Tensor:
    """Rows from random order-2 Markov chains (Akyürek et al. 2024: in-context learning of random languages):
    ``LongTensor[batch, (1) + length]``, BOS first when the tokenizer has one.

    Each row draws its own alphabet of ``symbols`` tokens from :func:`token_pool` and its own chain: every context
    ``(x_{t-2}, x_{t-1})`` has one preferred successor taken with probability ``stickiness``, otherwise a uniform
    symbol. The next token depends on the last two, so order-2 matches predict it and order-1 matches (the induction
    rule) mostly do not: with few symbols each token recurs often, and a token's earlier occurrences are followed
    by different tokens.
    """
    _check_size("batch", batch)
    _check_size("length", length, 4)
    _check_size("symbols", symbols, 2)
    if not 0.0 <= stickiness <= 1.0:
        raise ValueError(f"stickiness must be in [0, 1]; got {stickiness!r}")
    pool = token_pool(model)
    if len(pool) < symbols:
        raise ValueError(f"symbols={symbols} needs that many tokens but the vocabulary offers {len(pool)}")
    g = generator(seed)
    rows = []
    for _ in range(batch):
        alphabet = pool[torch.randperm(len(pool), generator=g)[:symbols]]
        successor = torch.randint(symbols, (symbols, symbols), generator=g)
        sticky = torch.rand(length, generator=g) < stickiness
        uniform = torch.randint(symbols, (length,), generator=g)
        seq = [int(uniform[0]), int(uniform[1])]
        for t in range(2, length):
            seq.append(int(successor[seq[-2], seq[-1]]) if sticky[t] else int(uniform[t]))
        rows.append(alphabet[torch.tensor(seq)])
    return with_bos(model, torch.stack(rows)).to(model.device)
