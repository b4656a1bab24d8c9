"""Labelled texts the toolkit makes itself, for worked examples, tests and benchmarks (no data set download).

- :func:`sentiment_texts`: templated one-sentence reviews whose sentiment is carried by one adjective
  (``"I thought the food was terrible."``); the adjective is each text's word type for the control task.
- :func:`zoo_fact_texts`: the zoo Mamba's fact prompts (``"... the capital of ka lo is"``), labelled by which half
  of the attribute list the answer falls in; the subject is the word type.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from interp.atomic import atomic_file

__all__ = ["LabelledTexts", "sentiment_texts", "zoo_fact_texts", "POSITIVE", "NEGATIVE"]

POSITIVE = ("wonderful", "great", "excellent", "delightful", "fantastic", "lovely", "brilliant", "superb",
            "charming", "pleasant", "amazing", "beautiful", "perfect", "enjoyable", "terrific", "marvelous",
            "splendid", "outstanding", "fabulous", "impressive")
NEGATIVE = ("terrible", "awful", "horrible", "dreadful", "boring", "disappointing", "miserable", "bad", "poor",
            "unpleasant", "disgusting", "mediocre", "annoying", "painful", "tedious", "dull", "awkward", "lousy",
            "depressing", "frustrating")
SUBJECTS = ("movie", "food", "hotel", "concert", "book", "weather", "service", "game", "trip", "show")
TEMPLATES = ("The {s} was {a}.", "I thought the {s} was {a}.", "Honestly, the {s} was {a}.",
             "Everyone said the {s} was {a}.")
NEGATED = ("The {s} was not {a}.", "I thought the {s} was not {a}.", "Honestly, the {s} was not {a}.",
           "Everyone said the {s} was not {a}.")


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with a label each and the word type that carries it (for Hewitt & Liang's control task)."""

    texts: tuple[str, ...]
    labels: tuple
    """One label per text (class names or numbers)."""
    types: tuple
    """The word each text's label rests on (a control task gives each word a random label)."""
    name: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def write_jsonl(self, path: str | Path, text_key: str = "text", label_key: str = "y",
                    type_key: str = "word") -> Path:
        """One JSON object per line (``{"text": ..., "y": ..., "word": ...}``), the ``interp probe`` input."""
        path = Path(path)
        with atomic_file(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for t, y, w in zip(self.texts, self.labels, self.types):
                    fh.write(json.dumps({text_key: t, label_key: y, type_key: w}) + "\n")
        return path


def sentiment_texts(n: int | None = None, *, negation: bool = True, seed: int = 0) -> LabelledTexts:
    """Templated reviews: every (template, subject, adjective) of 4 templates x 10 subjects x 20 positive and 20
    negative adjectives, and with ``negation`` the same with "not" before the adjective, which flips the label
    (3200 texts; 1600 without), shuffled with ``seed``, or the first ``n`` of them. Labels ``"positive"`` /
    ``"negative"``; the type is the adjective, so the adjective alone predicts a negated set's label at chance."""
    rows = [(t.format(s=s, a=a), "positive" if (a in POSITIVE) != (t in NEGATED) else "negative", a)
            for t in (*TEMPLATES, *(NEGATED if negation else ())) for s in SUBJECTS for a in (*POSITIVE, *NEGATIVE)]
    random.Random(seed).shuffle(rows)
    if n is not None:
        if not 2 <= n <= len(rows):
            raise ValueError(f"n must be in 2..{len(rows)}; got {n}")
        rows = rows[:n]
    texts, labels, types = zip(*rows)
    return LabelledTexts(texts, labels, types, "sentiment")


def zoo_fact_texts(name: str = "mamba2-facts", *, seed: int = 0) -> LabelledTexts:
    """Every fact prompt of zoo model ``name`` (train and held-out templates), ending right before the attribute;
    label: whether the attribute is in the first half of the attribute list (``"A-H"``) or the second
    (``"I-P"``); type: the subject."""
    from interp import zoo
    from interp.zoo import corpus

    first = set(corpus.ATTRIBUTES[: len(corpus.ATTRIBUTES) // 2])
    prompts = zoo.facts(name, "train", seed=seed) + zoo.facts(name, "heldout", seed=seed)
    return LabelledTexts(tuple(p.text for p in prompts), tuple("A-H" if p.answer in first else "I-P" for p in prompts),
                         tuple(p.subject for p in prompts), f"{name} facts")
