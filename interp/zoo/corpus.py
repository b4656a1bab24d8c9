"""The synthetic corpus the zoo models are trained on: factual associations and repeated segments.

Two skills, each in varied filler text:

- **facts**: a fixed table of multi-token subjects (two syllables, e.g. ``ka lo``) each mapped to one attribute
  token (a city), stated with a relation template such as ``the capital of ka lo is arvon .``. Templates are a
  prefix (``we know that``, ...) followed by a core phrasing; a few (prefix, core) pairs never occur in training
  and are used for held-out evaluation (:data:`HELDOUT_TEMPLATES`), with freshly drawn filler.
- **copying**: a random span of 4-8 tokens followed later in the same sequence by the same span
  (the induction / repeated-segment setting of Olsson et al. 2022).

Everything is word-level (one word = one token; see :func:`build_tokenizer`) and seeded, so the corpus and the
trained models are reproducible. Sequences start with ``<bos>`` so ``model.to_tokens(text)`` matches training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "SPECIALS", "SYLLABLES", "ATTRIBUTES", "FILLER", "PREFIXES", "CORES", "TRAIN_TEMPLATES", "HELDOUT_TEMPLATES",
    "Fact", "fact_table", "vocabulary", "build_tokenizer", "fact_sentence", "filler", "train_sequence",
    "copy_example",
]

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
SYLLABLES = [
    "ka", "lo", "mi", "ta", "ru", "ne", "po", "si", "da", "fe", "gu", "ho", "ji", "ve", "zu", "bo",
    "ri", "wa", "xe", "yo", "lu", "mo", "pi", "te",
]
ATTRIBUTES = [
    "arvon", "belmar", "cirrus", "dorvik", "elmara", "fjorn", "galen", "hestia", "istra", "jorvik",
    "kelso", "lunet", "morrow", "norvik", "orlen", "pellis",
]
FILLER = [
    "a", "old", "red", "small", "dog", "cat", "bird", "tree", "river", "stone", "house", "road", "walks",
    "sees", "finds", "runs", "near", "under", "over", "with", "and", "then", "today", "slowly", "green",
    "big", "sky", "rain", "sun", "boat",
]
PREFIXES = ["", "we know that", "it is said that", "as the book says ,", "in fact ,"]
CORES = ["the capital of {s} is {a} .", "{s} has its capital at {a} .", "the main city of {s} is {a} ."]
_ALL_TEMPLATES = [(p + " " + c).strip() for p in PREFIXES for c in CORES]
HELDOUT_TEMPLATES = [
    "as the book says , the capital of {s} is {a} .",
    "in fact , {s} has its capital at {a} .",
    "we know that the main city of {s} is {a} .",
]
"""(prefix, core) combinations that never occur in training: each part is seen, the combination is not."""
TRAIN_TEMPLATES = [t for t in _ALL_TEMPLATES if t not in HELDOUT_TEMPLATES]

_TEMPLATE_WORDS = sorted({w for t in _ALL_TEMPLATES for w in t.split() if not w.startswith("{")})
N_FACTS = 40
FACT_SEED = 1234


@dataclass(frozen=True)
class Fact:
    """One subject -> attribute association of the zoo corpus."""

    subject: str
    """Space-separated subject words (two syllables, i.e. two tokens), e.g. ``"ka lo"``."""
    attribute: str
    """The one-token attribute (a city name), e.g. ``"arvon"``."""


def fact_table(n: int = N_FACTS, seed: int = FACT_SEED) -> list[Fact]:
    """The fixed fact table: ``n`` distinct two-syllable subjects, attributes spread evenly over :data:`ATTRIBUTES`.

    Subjects share syllables (the first syllable alone does not identify the subject), so recall needs the
    whole multi-token subject.
    """
    rng = random.Random(seed)
    pairs = [(a, b) for a in SYLLABLES for b in SYLLABLES if a != b]
    rng.shuffle(pairs)
    subjects = [f"{a} {b}" for a, b in pairs[:n]]
    attrs = [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(n)]
    rng.shuffle(attrs)
    return [Fact(s, a) for s, a in zip(subjects, attrs)]


def vocabulary() -> list[str]:
    """All tokens, specials first (ids 0 pad, 1 bos, 2 eos, 3 unk)."""
    words = SYLLABLES + ATTRIBUTES + FILLER + [w for w in _TEMPLATE_WORDS if w not in FILLER]
    seen: list[str] = []
    for w in words:
        if w not in seen:
            seen.append(w)
    return SPECIALS + seen


def build_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over :func:`vocabulary` (whitespace-split, no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def fact_sentence(fact: Fact, template: str) -> str:
    """``template`` (with ``{s}`` and ``{a}``) filled with ``fact``."""
    return template.format(s=fact.subject, a=fact.attribute)


def filler(rng: random.Random, lo: int = 0, hi: int = 6) -> str:
    """``lo..hi`` random filler words."""
    return " ".join(rng.choice(FILLER) for _ in range(rng.randint(lo, hi)))


def _copy_pool() -> list[str]:
    return SYLLABLES + FILLER


def copy_example(rng: random.Random, span_len: int = 6, gap: tuple[int, int] = (1, 6)) -> tuple[str, int, int]:
    """``filler span filler span`` as text, with the word offsets of the two span starts (0-based, no bos)."""
    pool = _copy_pool()
    span = [rng.choice(pool) for _ in range(span_len)]
    pre = filler(rng, 0, 4).split()
    mid = filler(rng, *gap).split()
    words = pre + span + mid + span
    return " ".join(words), len(pre), len(pre) + span_len + len(mid)


def train_sequence(rng: random.Random, facts: list[Fact], max_words: int) -> str:
    """One training text (without bos) of at most ``max_words`` words: facts in training templates, filler, and
    one repeated segment, in random order."""
    pieces: list[list[str]] = []
    for _ in range(rng.randint(1, 3)):
        f = rng.choice(facts)
        pieces.append(fact_sentence(f, rng.choice(TRAIN_TEMPLATES)).split())
    pieces.append(filler(rng, 1, 5).split())
    rng.shuffle(pieces)
    pool = _copy_pool()
    span = [rng.choice(pool) for _ in range(rng.randint(4, 8))]
    at = rng.randint(0, len(pieces))
    pieces.insert(at, span)
    pieces.insert(rng.randint(at + 1, len(pieces)), span)
    words = [w for p in pieces for w in p]
    return " ".join(words[:max_words])
