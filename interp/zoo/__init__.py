"""A zoo of tiny trained models for tests, notebooks and examples (no model hub needed).

``mamba1-facts`` (Mamba-1, ``MambaForCausalLM``) and ``mamba2-facts`` (Mamba-2, ``Mamba2ForCausalLM``) are tiny
language models trained on the synthetic corpus of :mod:`interp.zoo.corpus`: multi-token subjects -> one-token
attributes in varied templates and filler, plus repeated random spans (copying). Each is an HF folder with
safetensors weights, a word-level ``tokenizer.json``, ``facts.json`` and ``metrics.json`` (held-out evaluation),
committed in the repository and reproduced by ``python -m interp.zoo.train --arch {mamba,mamba2} --out ...``.

    from interp import zoo
    model = zoo.load("mamba1-facts")                  # a HookedMamba with its tokenizer
    prompts = zoo.facts("mamba1-facts")               # FactPrompt(text, tokens, subject_span, answer_id, ...)
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.zoo.corpus import Fact
from interp.zoo.prompts import FactPrompt, fact_prompts

__all__ = ["NAMES", "path", "facts", "fact_table", "metrics", "tokenizer", "load", "Fact", "FactPrompt"]

NAMES = {"mamba1-facts": "mamba", "mamba2-facts": "mamba2"}
"""Zoo model name -> architecture."""

_ROOT = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The folder of zoo model ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(NAMES)}")
    folder = _ROOT / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"zoo model {name!r} is missing at {folder}; rebuild it with "
            f"`python -m interp.zoo.train --arch {NAMES[name]} --out {folder}`"
        )
    return folder


def _table(name: str) -> dict:
    return json.loads((path(name) / "facts.json").read_text())


def fact_table(name: str) -> list[Fact]:
    """The subject -> attribute table model ``name`` was trained on."""
    return [Fact(**f) for f in _table(name)["facts"]]


def metrics(name: str) -> dict:
    """The evaluation saved at training time (held-out recall, copying accuracy, training seconds, config)."""
    return json.loads((path(name) / "metrics.json").read_text())


def tokenizer(name: str):
    """The model's word-level tokenizer (``AutoTokenizer`` from the folder; offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path(name))


def facts(name: str, split: str = "heldout", *, seed: int = 0, max_filler: int = 4) -> list[FactPrompt]:
    """Fact prompts for model ``name``: one per (fact, template), ending right before the attribute, with the
    subject's token span and the answer token. ``split``: ``"heldout"`` (templates never seen in training) or
    ``"train"``; the filler before each prompt is drawn with ``seed``."""
    table = _table(name)
    key = {"heldout": "heldout_templates", "train": "train_templates"}.get(split)
    if key is None:
        raise ValueError(f"split must be 'heldout' or 'train'; got {split!r}")
    return fact_prompts(tokenizer(name), fact_table(name), table[key], seed=seed, max_filler=max_filler)


def load(name: str, dtype=None):
    """Zoo model ``name`` as a :class:`~interp.mamba.HookedMamba` with its tokenizer attached."""
    import torch

    from interp.mamba import from_hf
    from interp.models.loading import from_pretrained_checked

    # checked: a weights file that is a Git LFS pointer or truncated is an error naming it, not a random model
    hf = from_pretrained_checked(path(name), dtype or torch.float32)
    return from_hf(hf, tokenizer(name))
