"""Tiny random-init models for tests, notebooks and examples: built from configs, saved as HF folders.

``make_tiny("llama", path)`` writes ``config.json``, ``model.safetensors`` and a small character-level tokenizer
to ``path`` and returns the path, so tests exercise the real loading route (``interp.load_model(path)``).
Architectures: ``llama`` (grouped-query attention: 4 query heads, 2 kv heads), ``gpt2``, ``mamba``, ``mamba2``.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

__all__ = ["TINY_ARCHS", "make_tiny", "tiny_config", "char_tokenizer"]

TINY_ARCHS = ("llama", "gpt2", "mamba", "mamba2")
_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
_CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")
VOCAB_SIZE = 128  # >= len(_SPECIALS) + len(_CHARS) == 100; the rest are unused ids


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` (ids: 0 pad, 1 bos, 2 eos, 3 unk, then characters)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_SPECIALS + _CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_config(arch: str, **overrides):
    """The config of a tiny model of ``arch`` (see ``TINY_ARCHS``); ``overrides`` replace fields."""
    import transformers as tf

    common = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=False, **common,
        )
    elif arch == "gpt2":
        cfg = tf.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            **common,
        )
    elif arch == "mamba":
        cfg = tf.MambaConfig(
            hidden_size=64, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8,
            **common,
        )
    elif arch == "mamba2":
        cfg = tf.Mamba2Config(
            hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, num_heads=8, head_dim=16, n_groups=2,
            conv_kernel=4, chunk_size=16, time_step_rank=8, tie_word_embeddings=True, **common,
        )
    else:
        raise ValueError(f"arch must be one of {TINY_ARCHS}; got {arch!r}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny(arch: str, path: str | Path, seed: int = 0, **overrides) -> Path:
    """Build a random-init tiny ``arch`` model, save it (safetensors + tokenizer) in ``path``; return the path."""
    import transformers as tf

    cfg = tiny_config(arch, **overrides)
    cls = {
        "llama": tf.LlamaForCausalLM, "gpt2": tf.GPT2LMHeadModel,
        "mamba": tf.MambaForCausalLM, "mamba2": tf.Mamba2ForCausalLM,
    }[arch]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    if arch in ("mamba", "mamba2"):
        _spread_mamba_params(model)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    char_tokenizer().save_pretrained(path)
    return path


@torch.no_grad()
def _spread_mamba_params(model) -> None:
    """HF initialises some Mamba parameters to constants (D = 1, Mamba-2 A = 1..H); randomise them a little
    so that tests can tell channels and heads apart."""
    for name, p in model.named_parameters():
        if name.endswith(".D"):
            p.uniform_(0.5, 1.5)
        elif name.endswith(".dt_bias"):
            p.uniform_(-3.0, -1.0)
