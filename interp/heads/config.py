"""``HeadsConfig``: every choice of a head-discovery run (``interp.heads.detect`` and the ``interp heads`` verb map
onto it one to one)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from interp.heads.ablation import HOW
from interp.heads.haystack import MODES
from interp.heads.retrieval import DEFAULT_DEPTHS, DEFAULT_LENGTHS

__all__ = ["HeadsConfig", "KINDS", "THOROUGH", "check_kinds"]

KINDS = ("induction", "previous_token", "duplicate_token", "retrieval", "successor", "ngram")
"""Every head kind, in report order."""

# Models whose attention is implicit (Mamba) get shorter probes by default: implicit attention costs O(T^2) per
# channel, and the zoo models were trained on 40-token sequences with repeated spans of 4-8 tokens. Their passes are
# cheap, so validation keeps the larger samples.
_IMPLICIT_DEFAULTS = dict(repeat_half=8, ngram_length=64, ngram_symbols=4, retrieval_lengths=(24, 32, 40),
                          retrieval_depths=(0.25, 0.75), validation_batch=4, retrieval_validation_trials=2,
                          successor_prompts=0)

THOROUGH = dict(validation_batch=4, successor_prompts=0, retrieval_validation_trials=2,
                retrieval_lengths=(256, 512, 1024, 2048))
"""``thorough=True`` (``interp heads --thorough``): twice the validation rows, every successor prompt, two
retrieval validation trials and haystacks up to 2048 tokens: the default sizes before 2026-12-08. About 2.3x the time
of the defaults; on SmolLM2 both give the same top-5 heads of every kind and the same verdicts (``bench/heads.py``)."""


def check_kinds(kinds) -> tuple[str, ...]:
    """Normalise a kind selection (None = all; a comma-separated string or a list) and reject unknown kinds."""
    if kinds is None:
        return KINDS
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(f"kinds must be None, a comma-separated string or a list of kind names; got {kinds!r}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown head kind(s) {', '.join(map(repr, unknown))}; valid kinds: {', '.join(KINDS)}")
    if not kinds:
        raise ValueError(f"kinds is empty; choose from {', '.join(KINDS)} (or pass None for all)")
    return tuple(dict.fromkeys(kinds))


def _positive(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")


@dataclass(frozen=True)
class HeadsConfig:
    """What a head-discovery run measures, on which probes, and how it validates."""

    kinds: tuple[str, ...] = KINDS
    """The head kinds to score (:data:`KINDS`)."""
    top_k: int = 5
    """Heads per kind reported as top heads and ablated in the causal validation."""
    seed: int = 0
    """Seed of every probe and random draw (validation probes use ``seed + 1``)."""
    draws: int = 5
    """Random k-head sets ablated as the baseline of each kind's validation."""
    ablation: str = "mean"
    """How heads are ablated in validation: ``"mean"`` (mean over the batch and positions) or ``"zero"``."""
    repeat_batch: int = 8
    """Rows of repeated random tokens scored for previous-token, duplicate-token and induction heads."""
    repeat_half: int = 40
    """Length of each half of a repeated row (the row is BOS + 2 * repeat_half tokens)."""
    validation_batch: int = 2
    """Rows of fresh probe data per validation (repeated tokens and Markov chains)."""
    ngram_batch: int = 8
    """Markov-chain rows scored for n-gram heads."""
    ngram_length: int = 128
    """Tokens per Markov-chain row."""
    ngram_symbols: int = 6
    """Alphabet size of each random Markov chain."""
    ngram_stickiness: float = 0.6
    """Probability that a Markov chain takes its context's preferred successor (else a uniform symbol)."""
    retrieval_lengths: tuple[int, ...] = DEFAULT_LENGTHS
    """Needle-in-a-haystack prompt lengths (tokens)."""
    retrieval_depths: tuple[float, ...] = DEFAULT_DEPTHS
    """Needle depths in [0, 1]."""
    retrieval_mode: str = "auto"
    """Haystack kind: ``"auto"``, ``"text"`` or ``"tokens"`` (:mod:`interp.heads.haystack`)."""
    retrieval_validation_trials: int = 1
    """Reproduced trials used for the retrieval validation, the shortest first (its cost grows with the length)."""
    successor_window: int = 4
    """Consecutive task items in each successor validation prompt (``" one, two, three, four,"`` -> ``" five"``)."""
    successor_prompts: int = 8
    """Successor validation prompts per task, evenly spaced over its items (0: every run of ``successor_window``)."""
    derived: tuple[tuple[str, str], ...] = ()
    """The defaults :meth:`for_model` fitted to the model, as ``(field, why)`` (the report states them)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", check_kinds(self.kinds))
        for name in ("top_k", "draws", "repeat_batch", "validation_batch", "ngram_batch", "retrieval_validation_trials",
                     "successor_window"):
            _positive(name, getattr(self, name))
        _positive("repeat_half", self.repeat_half, 2)
        _positive("ngram_length", self.ngram_length, 8)
        _positive("ngram_symbols", self.ngram_symbols, 2)
        _positive("successor_prompts", self.successor_prompts, 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int; got {self.seed!r}")
        if isinstance(self.ngram_stickiness, bool) or not isinstance(self.ngram_stickiness, (int, float)) \
                or not 0.0 <= self.ngram_stickiness <= 1.0:
            raise ValueError(f"ngram_stickiness must be a number in [0, 1]; got {self.ngram_stickiness!r}")
        if self.ablation not in HOW:
            raise ValueError(f"ablation must be one of {HOW}; got {self.ablation!r}")
        if self.retrieval_mode not in MODES:
            raise ValueError(f"retrieval_mode must be one of {MODES}; got {self.retrieval_mode!r}")
        object.__setattr__(self, "retrieval_lengths", tuple(self.retrieval_lengths))
        object.__setattr__(self, "retrieval_depths", tuple(float(d) if isinstance(d, int) and not isinstance(d, bool)
                                                           else d for d in self.retrieval_depths))
        if not self.retrieval_lengths or not self.retrieval_depths:
            raise ValueError("retrieval_lengths and retrieval_depths must not be empty")
        for n in self.retrieval_lengths:
            _positive("retrieval_lengths entries", n, 16)
        for d in self.retrieval_depths:
            if not isinstance(d, float) or not 0.0 <= d <= 1.0:
                raise ValueError(f"retrieval_depths entries must be numbers in [0, 1]; got {d!r}")

    @classmethod
    def for_model(cls, model, *, thorough: bool = False, **overrides) -> HeadsConfig:
        """The defaults fitted to ``model``, then ``overrides`` (a value of None counts as not given).

        ``thorough``: start from :data:`THOROUGH` (larger validation samples, longer haystacks). Implicit-attention
        models get shorter probes. A default that cannot work on this model is derived from it
        instead, and ``derived`` says what and why: ``top_k`` is at most an eighth of the heads (so random k-head
        sets come from the other heads), ``draws`` at most the number of distinct random sets, ``repeat_half`` and
        ``ngram_symbols`` at most the usable vocabulary, probe lengths within the model's context length. A value
        given explicitly is kept, and an error later if it cannot work."""
        names = {f.name for f in fields(cls)} - {"derived"}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; HeadsConfig fields: {', '.join(sorted(names))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if not isinstance(thorough, bool):
            raise TypeError(f"thorough must be True or False; got {thorough!r}")
        base = cls(**THOROUGH) if thorough else cls()
        if model.has_implicit_attention and not model.has_attention_heads:
            base = replace(base, **_IMPLICIT_DEFAULTS)
        from interp.heads.probes import token_pool

        pool, n_ctx = len(token_pool(model)), getattr(model, "n_ctx", None)
        fitted = _fit_to_model(base, model, set(given), pool, n_ctx)
        cfg = replace(base, **{**{k: v for k, (v, _) in fitted.items()}, **given},
                      derived=tuple((k, why) for k, (_, why) in fitted.items()))
        _check_given(cfg, set(given), pool, n_ctx)
        return cfg

    def check_model(self, model) -> None:
        """Raise when the run cannot work on ``model`` at all (``top_k`` beyond the number of heads)."""
        total = model.n_layers * model.n_heads
        if self.top_k > total:
            raise ValueError(f"top_k={self.top_k} is larger than the number of heads of this model ({total} = "
                             f"{model.n_layers} layers x {model.n_heads} heads)")


_ANSWER_ROOM = 8  # tokens a retrieval trial needs past its prompt (the teacher-forced answer, with a margin)


def _check_given(cfg: HeadsConfig, given: set[str], pool: int, n_ctx: int | None) -> None:
    """Raise, naming the option, when a value given explicitly cannot work on a model with ``pool`` usable tokens
    and a context of ``n_ctx`` (defaults are fitted instead)."""
    if "repeat_half" in given and cfg.repeat_half > pool:
        raise ValueError(f"repeat_half={cfg.repeat_half} needs that many distinct tokens but this model's vocabulary "
                         f"offers {pool} (special tokens excluded); pass at most {pool}, or leave it out")
    if "ngram_symbols" in given and cfg.ngram_symbols > pool:
        raise ValueError(f"ngram_symbols={cfg.ngram_symbols} needs that many tokens but this model's vocabulary "
                         f"offers {pool}; pass at most {pool}, or leave it out")
    if n_ctx:
        for name, need in (("repeat_half", 1 + 2 * cfg.repeat_half), ("ngram_length", 1 + cfg.ngram_length),
                           ("retrieval_lengths", max(cfg.retrieval_lengths) + _ANSWER_ROOM)):
            if name in given and need > n_ctx:
                raise ValueError(f"{name}={getattr(cfg, name)!r} makes rows of {need} tokens but this model's "
                                 f"context is {n_ctx} tokens; pass a smaller value, or leave it out")


def _fit_to_model(base: HeadsConfig, model, given: set[str], pool: int, n_ctx: int | None) -> dict[str, tuple]:
    """``field -> (value, why)`` for each default of ``base`` (not in ``given``) that ``model`` (``pool`` usable
    tokens, context ``n_ctx``) cannot run."""
    from interp.heads.validation import draws_from_others

    out: dict[str, tuple] = {}
    total = model.n_layers * model.n_heads
    top_k = base.top_k if "top_k" in given else min(base.top_k, max(1, total // 8))
    if top_k != base.top_k:
        out["top_k"] = (top_k, f"an eighth of the model's {total} heads (default {base.top_k}), so that each "
                               f"validation's random {top_k}-head sets are drawn from the other heads")
    if "draws" not in given:  # the pool random_head_sets draws from
        others = total - top_k if draws_from_others(total - top_k, top_k) else total
        distinct = math.comb(others, top_k)
        if distinct < base.draws:
            out["draws"] = (distinct, f"only {distinct} distinct random {top_k}-head sets exist (default {base.draws})")
    half_cap = [(pool, f"the vocabulary offers {pool} usable tokens (special tokens excluded)")]
    if n_ctx:
        half_cap.append(((n_ctx - 1) // 2, f"a repeated row (BOS + 2 halves) must fit the context of {n_ctx} tokens"))
    cap, why = min(half_cap)
    if "repeat_half" not in given and 2 <= cap < base.repeat_half:
        out["repeat_half"] = (cap, f"{why} (default {base.repeat_half})")
    if "ngram_symbols" not in given and 2 <= pool < base.ngram_symbols:
        out["ngram_symbols"] = (pool, f"the vocabulary offers {pool} usable tokens (default {base.ngram_symbols})")
    if n_ctx and "ngram_length" not in given and base.ngram_length > n_ctx - 1 >= 8:
        out["ngram_length"] = (n_ctx - 1, f"a row (BOS + length) must fit the context of {n_ctx} tokens "
                                          f"(default {base.ngram_length})")
    room = n_ctx - _ANSWER_ROOM if n_ctx else None   # a teacher-forced trial appends its answer to the prompt
    if room and "retrieval_lengths" not in given and max(base.retrieval_lengths) > room:
        fit = tuple(n for n in base.retrieval_lengths if n <= room) or tuple(sorted({n for n in (room // 2, room)
                                                                                       if n >= 16}))
        if fit:
            out["retrieval_lengths"] = (fit, f"a prompt and its answer must fit the context of {n_ctx} tokens "
                                             f"(default {base.retrieval_lengths})")
    return out
