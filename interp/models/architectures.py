"""Declarative tables: where each canonical site lives in a Hugging Face transformer.

One ``ArchTable`` per family maps TransformerLens-style names onto module paths (relative to the model, or to a
decoder block). Adding a family that follows the same layout is a new table, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArchTable", "ARCH_TABLES", "table_for"]


@dataclass(frozen=True)
class ArchTable:
    """Module paths of one transformer family (HF ``model_type`` values in ``model_types``)."""

    arch: str
    """Short family name reported as ``model.arch``."""
    model_types: tuple[str, ...]
    """HF ``config.model_type`` values this table serves."""
    layers: str
    """Path of the ``ModuleList`` of decoder blocks."""
    embed: str
    """Token embedding module."""
    final_norm: str
    """Final norm before the unembedding."""
    attn: str
    """Attention module, relative to a block."""
    mlp: str
    """MLP module, relative to a block."""
    ln1: str
    """Norm before attention, relative to a block."""
    ln2: str
    """Norm before the MLP, relative to a block."""
    o_proj: str
    """Attention output projection, relative to the attention module."""
    mlp_out_proj: str
    """Last MLP projection (its input is ``mlp.hook_post``), relative to the MLP module."""
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    qkv_proj: str | None = None
    """Fused q/k/v projection (GPT-2's ``c_attn``), used when the separate ones are None."""
    pos_embed: str | None = None
    """Learned position embedding, if any."""
    conv1d: bool = False
    """Projections are GPT-2 ``Conv1D`` (weight stored [in, out]) rather than ``nn.Linear``."""
    rotary: bool = False
    """Queries/keys are rotated inside attention (adds ``hook_rot_q``/``hook_rot_k``)."""
    mlp_in_proj: str = "up_proj"
    """First MLP projection (TransformerLens ``W_in``; a gated MLP's linear branch), relative to the MLP module."""
    mlp_gate_proj: str | None = None
    """Gate projection of a gated MLP (``act(x W_gate) * (x W_in)``; TransformerLens ``W_gate``), or None."""
    norm: str = "RMS"
    """The norms' kind, as TransformerLens's ``normalization_type``: ``"RMS"`` (RMSNorm) or ``"LN"`` (LayerNorm)."""


_LLAMA = ArchTable(
    arch="llama",
    model_types=("llama", "mistral", "qwen2"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    q_proj="q_proj",
    k_proj="k_proj",
    v_proj="v_proj",
    o_proj="o_proj",
    mlp_out_proj="down_proj",
    mlp_in_proj="up_proj",
    mlp_gate_proj="gate_proj",
    rotary=True,
)

_GPT2 = ArchTable(
    arch="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    final_norm="transformer.ln_f",
    attn="attn",
    mlp="mlp",
    ln1="ln_1",
    ln2="ln_2",
    qkv_proj="c_attn",
    o_proj="c_proj",
    mlp_out_proj="c_proj",
    mlp_in_proj="c_fc",
    conv1d=True,
    norm="LN",
)

ARCH_TABLES: tuple[ArchTable, ...] = (_LLAMA, _GPT2)


def table_for(model_type: str) -> ArchTable:
    """The table serving HF ``model_type``; raises ValueError listing the supported types."""
    for table in ARCH_TABLES:
        if model_type in table.model_types:
            return table
    supported = sorted({t for table in ARCH_TABLES for t in table.model_types} | {"mamba", "mamba2"})
    raise ValueError(
        f"unsupported architecture: model_type {model_type!r}. Supported model types: {', '.join(supported)}"
    )
