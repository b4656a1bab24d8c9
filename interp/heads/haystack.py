"""Needle-in-a-haystack trials for retrieval heads (Wu et al. 2024): prompts of an exact token length with a needle
at a chosen depth, built from the model's own tokenizer or vocabulary.

Two modes (``mode="auto"`` picks text when the tokenizer encodes and decodes the filler text losslessly with no
unknown token, tokens otherwise):

- ``"text"``: the haystack is filler sentences made from small word lists (seeded; Wu et al. use essays); the
  needle is ``" The secret code for the <place> vault is <w1> <w2> <w3> <w4>."`` with four answer words that never
  occur in the filler; the prompt ends with a new line and the needle's opening ``"The secret code for the <place>
  vault is"``, so the model must find the needle and continue with the answer (a completion-style haystack test:
  a base model needs no instruction; Wu et al. ask a question).
- ``"tokens"``: haystack, cue and answer are random tokens from the vocabulary, the needle's tokens disjoint from
  the haystack's (for word-level toy vocabularies and tokenizer-less models).

The needle (cue + answer) is inserted at a sentence boundary (text) or a token (tokens) near ``depth`` of the
haystack; the answer is what the model should generate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.heads.probes import bos_id, token_pool

__all__ = ["Trial", "make_trials", "haystack_mode", "MODES"]

MODES = ("auto", "text", "tokens")

_SUBJECTS = ("farmer", "teacher", "river", "village", "garden", "market", "student", "sailor", "engine", "library",
             "painter", "bridge", "doctor", "kitchen", "forest", "window", "traveler", "clock", "harbor", "baker")
_VERBS = ("watched", "followed", "crossed", "repaired", "visited", "described", "carried", "painted", "opened",
          "counted", "cleaned", "measured", "remembered", "answered", "passed", "found")
_ADJECTIVES = ("old", "quiet", "small", "busy", "green", "narrow", "warm", "early", "wooden", "careful", "bright",
               "distant", "simple", "heavy", "gentle", "open")
_PLACES = ("morning", "evening", "summer", "winter", "afternoon", "weekend", "spring", "season")
_TEMPLATES = (
    "The {a} {s} {v} the {a2} {s2} in the {p}.",
    "Every {p}, the {s} {v} a {a} {s2}.",
    "A {a} {s} {v} the {s2} before the {p} ended.",
    "In the {p} the {a} {s2} was {v} by the {s}.",
    "Nobody knew why the {s} {v} the {a} {s2}.",
    "The {s2} near the {s} was {a} that {p}.",
)
_ANSWERS = ("saffron", "glacier", "trombone", "nebula", "walrus", "cobalt", "juniper", "quartz", "falcon", "orchid",
            "tundra", "lantern", "velvet", "harpoon", "pepper", "canyon", "meteor", "violet", "thistle", "anchor",
            "zephyr", "mango", "pewter", "lagoon")
_VAULTS = ("north", "silver", "hidden", "eastern", "iron", "crystal")


@dataclass(frozen=True)
class Trial:
    """One haystack prompt."""

    length: int
    """Prompt length in tokens (BOS included)."""
    depth: float
    """Where the needle sits in the haystack (0 = start, 1 = end)."""
    prompt: Tensor
    """``LongTensor[length]``: BOS, haystack with the needle, then the cue."""
    needle: tuple[int, int]
    """``(start, stop)`` of the inserted needle (cue and answer) in ``prompt``."""
    answer: Tensor
    """``LongTensor[n]``: the needle tokens the model should produce after the prompt."""


def _sentence(rng: random.Random) -> str:
    return rng.choice(_TEMPLATES).format(a=rng.choice(_ADJECTIVES), a2=rng.choice(_ADJECTIVES),
                                         s=rng.choice(_SUBJECTS), s2=rng.choice(_SUBJECTS), v=rng.choice(_VERBS),
                                         p=rng.choice(_PLACES))


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def haystack_mode(model, mode: str = "auto") -> str:
    """Resolve ``mode`` (:data:`MODES`) for this model: ``"text"`` or ``"tokens"``."""
    if mode not in MODES:
        raise ValueError(f"haystack mode must be one of {MODES}; got {mode!r}")
    if mode != "auto":
        if mode == "text" and model.tokenizer is None:
            raise ValueError("haystack mode 'text' needs a tokenizer; this model has none (use 'tokens')")
        return mode
    tok = model.tokenizer
    if tok is None:
        return "tokens"
    sample = " " + " ".join((_TEMPLATES[0], *(f"{w} {v}" for w, v in zip(_ANSWERS, _VAULTS)), *_SUBJECTS, *_VERBS,
                             *_ADJECTIVES, *_PLACES)) + "\nThe secret code for the vault is"
    ids = _encode(tok, sample)
    unk = getattr(tok, "unk_token_id", None)
    lossless = tok.decode(ids) == sample
    return "text" if lossless and (unk is None or unk not in ids) and max(ids) < model.d_vocab else "tokens"


def _text_pieces(model, rng: random.Random, n_haystack: int) -> tuple[list[list[int]], list[int], list[int], list[int]]:
    tok = model.tokenizer
    words = rng.sample(_ANSWERS, 4)
    vault = rng.choice(_VAULTS)
    cue_text = f"The secret code for the {vault} vault is"
    cue = _encode(tok, " " + cue_text)
    answer = _encode(tok, " " + " ".join(words))
    end = _encode(tok, "\n" + cue_text)
    sentences: list[list[int]] = []
    total = 0
    while total < n_haystack:
        ids = _encode(tok, " " + _sentence(rng))
        sentences.append(ids)
        total += len(ids)
    return sentences, cue + answer + _encode(tok, "."), answer, end


def _token_pieces(model, rng: random.Random, n_haystack: int, cue_len: int = 3, answer_len: int = 4):
    pool = token_pool(model).tolist()
    if len(pool) < cue_len + answer_len + 2:
        raise ValueError(f"the vocabulary offers {len(pool)} tokens; a token haystack needs at least "
                         f"{cue_len + answer_len + 2}")
    needle_ids = rng.sample(pool, cue_len + answer_len)
    rest = sorted(set(pool) - set(needle_ids))
    cue, answer = needle_ids[:cue_len], needle_ids[cue_len:]
    hay = [rng.choice(rest) for _ in range(n_haystack)]
    return [[t] for t in hay], cue + answer, answer, cue


def make_trials(model, lengths, depths, *, mode: str = "auto", seed: int = 0) -> list[Trial]:
    """One :class:`Trial` per (length, depth), each with its own haystack, needle and answer drawn with ``seed``."""
    lengths, depths = list(lengths), list(depths)
    if not lengths or not depths:
        raise ValueError("retrieval needs at least one length and one depth")
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= 1.0:
            raise ValueError(f"depths must be numbers in [0, 1]; got {d!r}")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 16:
            raise ValueError(f"lengths must be ints >= 16 (prompt tokens); got {n!r}")
    mode = haystack_mode(model, mode)
    bos = bos_id(model)
    trials = []
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            rng = random.Random(f"{seed}:{i}:{j}")
            pieces = _text_pieces if mode == "text" else _token_pieces
            sentences, needle, answer, end = pieces(model, rng, length)
            n_hay = length - (bos is not None) - len(needle) - len(end)
            if n_hay < 1:
                raise ValueError(f"length {length} is too short for the needle ({len(needle)} tokens) and the cue "
                                 f"({len(end)} tokens); use longer lengths")
            flat = [t for s in sentences for t in s][:n_hay]
            cuts = [0]
            for s in sentences:
                cuts.append(min(n_hay, cuts[-1] + len(s)))
            at = min(cuts, key=lambda c: abs(c - depth * n_hay))
            head = ([bos] if bos is not None else []) + flat[:at]
            ids = head + needle + flat[at:] + end
            trials.append(Trial(length, float(depth), torch.tensor(ids, dtype=torch.long),
                                (len(head), len(head) + len(needle)), torch.tensor(answer, dtype=torch.long)))
    return trials
