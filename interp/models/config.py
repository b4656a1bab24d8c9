"""``model.cfg``: a model's shape and kind under TransformerLens's ``HookedTransformerConfig`` field names, so code
written against ``model.cfg.n_layers``, ``cfg.d_head``, ``cfg.normalization_type`` ... runs unchanged.

A small frozen record of what the model *is*; it configures nothing (our models keep the original library's weights
and numerics: no field here switches behaviour, unlike TransformerLens's ``use_attn_result``). Fields that do not apply
are None (``d_mlp`` of Mamba, ``rotary_dim`` of GPT-2). The toolkit's additions describe recurrent layers
(``layer_types``, ``d_state``, ``d_conv``, ``d_inner``, ``n_groups``, ``n_ssm_heads``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ModelConfig", "build_config", "LAYER_TYPES", "NORMALIZATION_TYPES", "POSITIONAL_TYPES"]

LAYER_TYPES = ("attention", "mamba", "mamba2")
NORMALIZATION_TYPES = ("LN", "LNPre", "RMS", "RMSPre", None)
POSITIONAL_TYPES = ("standard", "rotary", "shortformer", "alibi", "none")


@dataclass(frozen=True)
class ModelConfig:
    """A model's configuration under TransformerLens's names (``HookedTransformerConfig``), plus recurrent fields."""

    n_layers: int
    """Number of blocks."""
    d_model: int
    """Width of the residual stream."""
    n_heads: int
    """Query heads per attention layer (Mamba-2: SSM heads; Mamba-1: channel groups, see ``HookedModel.n_heads``)."""
    d_head: int
    """Width of one head (Mamba: channels per head or group)."""
    d_vocab: int
    """Vocabulary size of the unembedding."""
    n_ctx: int | None = None
    """Longest context the model was built for (``max_position_embeddings``; None: no limit, as in Mamba)."""
    d_mlp: int | None = None
    """MLP hidden width (None: no MLP)."""
    n_key_value_heads: int | None = None
    """Key/value heads of grouped-query attention; None when every query head has its own (TransformerLens's
    convention)."""
    act_fn: str | None = None
    """The MLP's (Mamba: the mixer's) activation, as the original config names it (``"silu"``, ``"gelu_new"``)."""
    eps: float = 1e-5
    """The norms' epsilon."""
    normalization_type: str | None = "LN"
    """``"LN"`` (LayerNorm), ``"RMS"`` (RMSNorm) or None. Never ``"LNPre"``/``"RMSPre"``: weights are not folded."""
    positional_embedding_type: str = "standard"
    """``"standard"`` (learned), ``"rotary"``, or ``"none"`` (recurrent models: position comes from the recurrence)."""
    rotary_dim: int | None = None
    """Rotated dimensions per head (rotary models)."""
    rotary_base: float | None = None
    """Rotary frequency base (``rope_theta``)."""
    gated_mlp: bool = False
    """The MLP is ``act(x W_gate) ⊙ (x W_in)`` (SwiGLU / GeGLU)."""
    attn_only: bool = False
    """Blocks have attention but no MLP."""
    parallel_attn_mlp: bool = False
    """Attention and MLP read the same residual stream (GPT-J / NeoX style)."""
    tie_word_embeddings: bool = False
    """The unembedding is the token embedding transposed."""
    d_vocab_out: int = -1
    """TransformerLens: the unembedding's width when it differs from ``d_vocab`` (-1: the same)."""
    original_architecture: str | None = None
    """The original model class (``"LlamaForCausalLM"``)."""
    model_name: str | None = None
    """The model's name (folder or checkpoint name)."""
    tokenizer_name: str | None = None
    """The tokenizer's name or path, if known."""
    default_prepend_bos: bool = True
    """``to_tokens`` prepends BOS by default."""
    device: str = "cpu"
    """Where the parameters are (read when ``cfg`` is read)."""
    dtype: torch.dtype = torch.float32
    """The parameters' dtype (read when ``cfg`` is read)."""
    attention_dir: str = "causal"
    """Attention direction (causal language models only)."""
    use_attn_result: bool = True
    """``attn.hook_result`` (per-head outputs) is a site; always, where there are heads."""
    arch: str = ""
    """The toolkit's family name (``model.arch``), informative only."""
    layer_types: tuple[str, ...] = field(default=())
    """Per block, what mixes tokens: ``"attention"``, ``"mamba"`` or ``"mamba2"``."""
    d_state: int | None = None
    """SSM state size per channel (Mamba)."""
    d_conv: int | None = None
    """Causal convolution width (Mamba)."""
    d_inner: int | None = None
    """The mixer's inner width, ``expand * d_model`` (Mamba)."""
    n_groups: int | None = None
    """B/C groups (Mamba-2)."""
    n_ssm_heads: int | None = None
    """SSM heads (Mamba-2)."""

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int; got {value!r}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ValueError(f"ModelConfig.normalization_type must be one of {NORMALIZATION_TYPES}; got "
                             f"{self.normalization_type!r}")
        if self.positional_embedding_type not in POSITIONAL_TYPES:
            raise ValueError(f"ModelConfig.positional_embedding_type must be one of {POSITIONAL_TYPES}; got "
                             f"{self.positional_embedding_type!r}")
        if len(self.layer_types) != self.n_layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ValueError(f"ModelConfig.layer_types must name one of {LAYER_TYPES} for each of the "
                             f"{self.n_layers} blocks; got {self.layer_types!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (``dtype`` as its name)."""
        out = dataclasses.asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        out["layer_types"] = list(self.layer_types)
        return out

    def __getitem__(self, key: str):
        """``cfg["n_layers"]``: TransformerLens configs are also read like dicts."""
        if not isinstance(key, str) or key not in self.__dataclass_fields__:
            raise KeyError(f"{key!r} is not a ModelConfig field; fields: {', '.join(self.__dataclass_fields__)}")
        return getattr(self, key)


def build_config(model) -> ModelConfig:
    """``model.cfg``: the shape every ``HookedModel`` has, the wrapper's ``_config_fields()`` (kept once per model),
    and the parameters' device and dtype as they are now."""
    fields = model.__dict__.get("_config_fields_cache")
    if fields is None:
        fields = dict(model._config_fields())
        model.__dict__["_config_fields_cache"] = fields
    param = next(iter(model.parameters()), None)
    tok = getattr(model, "tokenizer", None)
    base = dict(
        n_layers=model.n_layers, d_model=model.d_model, n_heads=model.n_heads, d_head=model.d_head,
        d_vocab=model.d_vocab, arch=model.arch,
        n_key_value_heads=model.n_kv_heads if model.n_kv_heads != model.n_heads else None,
        attn_only=model.has_attention_heads and not model.has_mlp,
        use_attn_result=model.has_attention_heads,
        layer_types=("attention",) * model.n_layers,
        tokenizer_name=getattr(tok, "name_or_path", None) or None,
        device=str(param.device) if param is not None else "cpu",
        dtype=param.dtype if param is not None else torch.float32,
    )
    return ModelConfig(**{**base, **fields})
