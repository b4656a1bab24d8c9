"""Fact prompts with known subject spans, for recall evaluation and causal tracing on the zoo models."""

from __future__ import annotations

import random
from dataclasses import dataclass

from interp.zoo import corpus

__all__ = ["FactPrompt", "fact_prompts"]


@dataclass(frozen=True)
class FactPrompt:
    """A prompt that ends right before a fact's attribute."""

    text: str
    """The prompt text, without ``<bos>`` (``model.to_tokens(text)`` prepends it)."""
    tokens: tuple[int, ...]
    """Token ids including the leading ``<bos>``; the model should predict ``answer_id`` after the last one."""
    subject_span: tuple[int, int]
    """``(start, stop)`` token positions of the subject in ``tokens`` (half-open; ``stop - 1`` is the last
    subject token)."""
    subject: str
    """The subject words."""
    answer: str
    """The attribute word."""
    answer_id: int
    """The attribute's token id."""
    template: str
    """The template the prompt was built from."""


def fact_prompts(
    tok, facts: list[corpus.Fact], templates: list[str], *, seed: int = 0, max_filler: int = 4
) -> list[FactPrompt]:
    """One prompt per (fact, template): random filler (``0..max_filler`` words, drawn with ``seed``), then the
    template cut before ``{a}``."""
    rng = random.Random(seed)
    out = []
    for template in templates:
        if "{s}" not in template or "{a}" not in template:
            raise ValueError(f"template must contain '{{s}}' and '{{a}}'; got {template!r}")
        head = template[: template.index("{a}")].strip()
        for fact in facts:
            fill = corpus.filler(rng, 0, max_filler)
            before, after = head.split("{s}")
            words_before = (fill + " " + before).split()
            text = " ".join([*words_before, *fact.subject.split(), *after.split()])
            ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
            start = 1 + len(words_before)
            span = (start, start + len(fact.subject.split()))
            answer_id = tok.convert_tokens_to_ids(fact.attribute)
            if tok.unk_token_id in ids or answer_id == tok.unk_token_id:
                raise ValueError(f"prompt {text!r} / answer {fact.attribute!r} has words outside the vocabulary")
            out.append(FactPrompt(text, tuple(ids), span, fact.subject, fact.attribute, answer_id, template))
    return out
