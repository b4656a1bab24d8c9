"""``MambaSpec``: the numbers that fix a Mamba-1 / Mamba-2 language model, read from a Hugging Face config.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Mamba-1) and Dao & Gu 2024,
"Transformers are SSMs" (Mamba-2, SSD). The field semantics follow ``transformers``' ``MambaConfig`` /
``Mamba2Config`` (see ``modeling_mamba.py`` / ``modeling_mamba2.py``).

:func:`spec_from_hf` whitelists the HF config fields: fields that change the forward pass are read (and
checked against what this implementation supports), fields that only matter for initialisation, training or
generation are ignored, and any other field raises unless it holds its class default -- so a checkpoint whose
config asks for math we do not implement fails loudly instead of giving silently wrong logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MambaSpec", "spec_from_hf", "mamba1_groups"]

ARCHS = ("mamba", "mamba2")

# Fields of PreTrainedConfig itself and loader metadata: none changes the forward pass.
_METADATA = {
    "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype", "id2label", "label2id",
    "is_encoder_decoder", "model_type", "output_attentions", "output_hidden_states", "problem_type", "return_dict",
    "transformers_version", "use_return_dict", "tokenizer_class", "task_specific_params", "finetuning_task",
    "pad_token_id", "bos_token_id", "eos_token_id", "use_cache", "initializer_range", "rescale_prenorm_residual",
    "time_step_min", "time_step_max", "time_step_floor", "time_step_scale", "time_step_init_scheme",
}
# Fields whose values this implementation reads.
_MATH = {
    "mamba": {
        "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "expand",
        "intermediate_size", "conv_kernel", "use_bias", "use_conv_bias", "hidden_act", "residual_in_fp32",
        "time_step_rank", "tie_word_embeddings",
        # Alternative exact algorithms for the same scan (mamba.py pscan, associative_scan under compile).
        "use_mambapy", "use_associative_scan",
    },
    "mamba2": {
        "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "expand",
        "conv_kernel", "use_bias", "use_conv_bias", "hidden_act", "residual_in_fp32", "tie_word_embeddings",
        "num_heads", "head_dim", "n_groups", "time_step_limit",
        # chunk_size only changes how HF's scan is evaluated; time_step_rank is unused by Mamba2Mixer.
        "chunk_size", "time_step_rank",
    },
}


@dataclass(frozen=True)
class MambaSpec:
    """Shape and numerics of a Mamba-1 or Mamba-2 causal LM (our own names; see :func:`spec_from_hf`)."""

    arch: str
    """``"mamba"`` (Mamba-1, selective scan) or ``"mamba2"`` (Mamba-2, SSD)."""
    n_layers: int
    """Number of residual blocks."""
    d_model: int
    """Residual stream width (HF ``hidden_size``)."""
    d_vocab: int
    """Vocabulary size."""
    d_inner: int
    """Width of the mixer's inner stream (HF ``intermediate_size`` = ``expand * hidden_size``)."""
    d_state: int
    """SSM state size N per channel (Mamba-1) or per head (Mamba-2) (HF ``state_size``)."""
    d_conv: int
    """Causal depthwise conv1d kernel width (HF ``conv_kernel``); left padding ``d_conv - 1``."""
    eps: float
    """RMSNorm epsilon, used by the block norms, the final norm and Mamba-2's gated norm."""
    use_bias: bool = False
    """Whether ``in_proj`` and ``out_proj`` have biases."""
    use_conv_bias: bool = True
    """Whether the conv1d has a bias."""
    residual_in_fp32: bool = True
    """Keep the residual stream in float32 (matters only for half-precision weights)."""
    tie_embeddings: bool = True
    """Whether the unembedding shares the embedding matrix."""
    dt_rank: int = 0
    """Mamba-1: rank of the Δ projection (HF ``time_step_rank``); 0 for Mamba-2."""
    n_ssm_heads: int = 0
    """Mamba-2: number of SSM heads H; 0 for Mamba-1."""
    head_dim: int = 0
    """Mamba-2: channels per SSM head P (``d_inner == H * P``); 0 for Mamba-1."""
    n_groups: int = 1
    """Mamba-2: number of B/C groups G (head h reads group ``h // (H // G)``); 1 for Mamba-1."""
    dt_min: float = 0.0
    """Mamba-2: lower clamp of Δ after softplus (HF ``time_step_limit[0]``)."""
    dt_max: float = math.inf
    """Mamba-2: upper clamp of Δ after softplus (HF ``time_step_limit[1]``)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        for name in ("n_layers", "d_model", "d_vocab", "d_inner", "d_state", "d_conv"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.arch == "mamba" and self.dt_rank < 1:
            raise ValueError(f"dt_rank must be a positive int for Mamba-1; got {self.dt_rank!r}")
        if self.arch == "mamba2":
            if self.n_ssm_heads * self.head_dim != self.d_inner:
                raise ValueError(
                    f"n_ssm_heads * head_dim must equal d_inner; got {self.n_ssm_heads} * {self.head_dim} "
                    f"!= {self.d_inner}"
                )
            if self.n_groups < 1 or self.n_ssm_heads % self.n_groups or self.d_inner % self.n_groups:
                raise ValueError(
                    f"n_groups must divide n_ssm_heads ({self.n_ssm_heads}) and d_inner; got {self.n_groups}"
                )
        if not 0.0 <= self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 <= dt_min <= dt_max; got ({self.dt_min}, {self.dt_max})")

    @property
    def conv_dim(self) -> int:
        """Channels of the conv1d: ``d_inner`` (Mamba-1) or ``d_inner + 2 * n_groups * d_state`` (Mamba-2)."""
        return self.d_inner if self.arch == "mamba" else self.d_inner + 2 * self.n_groups * self.d_state


def mamba1_groups(d_inner: int, max_groups: int = 8) -> int:
    """Mamba-1's head axis: the largest divisor of ``d_inner`` that is at most ``max_groups`` (8 by default).

    Mamba-1 has no heads; ``HookedMamba.n_heads`` groups the ``d_inner`` channels into this many contiguous
    groups of ``d_inner // n_heads`` channels (the implicit-attention head axis).
    """
    return max(g for g in range(1, max_groups + 1) if d_inner % g == 0)


def spec_from_hf(config, ignore_fields: tuple[str, ...] = ()) -> MambaSpec:
    """Read an HF ``MambaConfig`` / ``Mamba2Config`` into a :class:`MambaSpec`.

    Raises ``ValueError`` naming the field when the config holds a field this implementation does not know
    with a non-default value, or a known field with an unsupported value (e.g. ``hidden_act`` other than silu).
    ``ignore_fields`` names unknown fields to accept anyway (at your own risk).
    """
    arch = getattr(config, "model_type", None)
    if arch not in ARCHS:
        raise ValueError(f"config.model_type must be one of {ARCHS}; got {arch!r}")
    _check_unknown_fields(config, arch, set(ignore_fields))
    act = getattr(config, "hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"config field 'hidden_act' = {act!r} is not supported; the Mamba conv uses silu")
    common = dict(
        arch=arch, n_layers=int(config.num_hidden_layers), d_model=int(config.hidden_size),
        d_vocab=int(config.vocab_size), d_state=int(config.state_size), d_conv=int(config.conv_kernel),
        eps=float(config.layer_norm_epsilon), use_bias=bool(config.use_bias),
        use_conv_bias=bool(config.use_conv_bias), residual_in_fp32=bool(config.residual_in_fp32),
        tie_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
    )
    if arch == "mamba":
        d_inner = int(getattr(config, "intermediate_size", config.expand * config.hidden_size))
        return MambaSpec(d_inner=d_inner, dt_rank=int(config.time_step_rank), **common)
    limit = tuple(float(v) for v in getattr(config, "time_step_limit", (0.0, math.inf)))
    if len(limit) != 2:
        raise ValueError(f"config field 'time_step_limit' must hold two numbers; got {config.time_step_limit!r}")
    return MambaSpec(
        d_inner=int(config.expand * config.hidden_size), n_ssm_heads=int(config.num_heads),
        head_dim=int(config.head_dim), n_groups=int(config.n_groups), dt_min=limit[0], dt_max=limit[1], **common,
    )


def _check_unknown_fields(config, arch: str, ignore: set[str]) -> None:
    known = _METADATA | _MATH[arch] | ignore
    defaults = type(config)().to_dict() if hasattr(type(config), "to_dict") else {}
    bad = []
    for key, value in config.to_dict().items():
        if key in known or key.startswith("_"):
            continue
        if key in defaults and _same(defaults[key], value):
            continue
        bad.append(f"{key}={value!r}")
    if bad:
        raise ValueError(
            f"{arch} config field(s) {', '.join(bad)} are not known to interp's Mamba implementation and may "
            "change the forward pass; pass ignore_fields=(...) to from_hf if you know they do not"
        )


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
