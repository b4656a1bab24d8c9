"""Checking what patching is given: position-aligned clean and corrupted prompts of one length."""

from __future__ import annotations

from torch import Tensor

__all__ = ["pair_tokens", "show_tokens"]


def show_tokens(model, row: Tensor) -> list:
    """Token strings of one row (the ids when the model has no tokenizer)."""
    if model.tokenizer is None:
        return row.tolist()
    return model.to_str_tokens(row)


def _tokens(model, tokens, arg: str) -> Tensor:
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        ids, mask = model.to_tokens(list(tokens) if not isinstance(tokens, str) else tokens,
                                    return_attention_mask=True)
        if not bool(mask.all()):
            lengths = mask.sum(1).tolist()
            raise ValueError(f"{arg}: the prompts tokenise to different lengths {lengths}; patching compares "
                             "positions, so every prompt must have the same number of tokens")
        return ids
    return model.check_tokens(tokens, arg)


def pair_tokens(model, clean_tokens, corrupt_tokens) -> tuple[Tensor, Tensor]:
    """``(clean [n, pos], corrupt [n, pos])`` as token ids, checked to have the same shape (text is tokenised)."""
    clean = _tokens(model, clean_tokens, "clean_tokens")
    corrupt = _tokens(model, corrupt_tokens, "corrupt_tokens")
    if clean.shape[1] != corrupt.shape[1]:
        raise ValueError(
            f"clean and corrupt token lengths differ: clean has {clean.shape[1]} tokens "
            f"{show_tokens(model, clean[0])}, corrupt has {corrupt.shape[1]} {show_tokens(model, corrupt[0])}; "
            "patching needs position-aligned prompts of the same length")
    if clean.shape[0] != corrupt.shape[0]:
        raise ValueError(f"clean_tokens has {clean.shape[0]} prompts and corrupt_tokens {corrupt.shape[0]}; pass one "
                         "corrupted prompt per clean prompt")
    return clean, corrupt
