"""Locating the subject of a factual prompt among its tokens."""

from __future__ import annotations

import re

from torch import Tensor

__all__ = ["subject_span", "prompt_tokens"]


def prompt_tokens(model, prompt) -> Tensor:
    """One prompt as token ids ``[1, pos]`` (text is tokenised with the model's BOS, as ``model.to_tokens``)."""
    if isinstance(prompt, str):
        return model.to_tokens(prompt)
    tokens = model.check_tokens(prompt, "prompt")
    if tokens.shape[0] != 1:
        raise ValueError(f"prompt must be one prompt; got {tokens.shape[0]} rows")
    return tokens


def subject_span(model, tokens: Tensor, subject) -> tuple[int, int]:
    """``(start, stop)`` token positions (half-open) of ``subject`` in ``tokens`` ``[1, pos]``.

    ``subject``: text (matched against the token strings with whitespace ignored, first occurrence, as ROME's
    ``find_token_range``; every token overlapping it counts) or an explicit ``(start, stop)`` pair. Raises a
    ValueError showing the tokens when it is not there.
    """
    T = tokens.shape[-1]
    if isinstance(subject, (tuple, list)) and len(subject) == 2 and all(isinstance(s, int) for s in subject):
        start, stop = subject
        if not 0 <= start < stop <= T:
            raise ValueError(f"subject span {tuple(subject)} is not inside the prompt's {T} tokens "
                             "(expected 0 <= start < stop <= pos)")
        return int(start), int(stop)
    if not isinstance(subject, str):
        raise TypeError(f"subject must be text or a (start, stop) token span; got {type(subject).__name__}")
    target = re.sub(r"\s+", "", subject)
    if not target:
        raise ValueError("subject is empty")
    strs = [str(s) for s in model.to_str_tokens(tokens[0])]
    owner: list[int] = []
    for i, s in enumerate(strs):
        owner.extend([i] * len(re.sub(r"\s+", "", s)))
    joined = "".join(re.sub(r"\s+", "", s) for s in strs)
    at = joined.find(target)
    if at < 0:
        raise ValueError(f"subject {subject!r} is not in the prompt; its tokens are {strs}")
    return owner[at], owner[at + len(target) - 1] + 1
