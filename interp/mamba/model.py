"""``HookedMamba``: Mamba-1 / Mamba-2 causal LMs in plain torch behind the ``HookedModel`` interface.

Gu & Dao 2023 (Mamba-1) and Dao & Gu 2024 (Mamba-2). Load weights with :func:`interp.mamba.from_hf`.

Sites (T = pos), in forward order:

- ``hook_embed`` [b,T,d_model]; per block ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.ln1.hook_scale`` (the
  block norm's scale [b,T,1], see :mod:`interp.models.norms`), the mixer sites
  ``blocks.{l}.mixer.hook_*`` (see :mod:`interp.mamba.mamba1` / :mod:`interp.mamba.mamba2`),
  ``blocks.{l}.hook_mixer_out`` (= the mixer's ``hook_out``, after it), ``blocks.{l}.hook_resid_post``;
  ``ln_final.hook_scale`` [b,T,1], ``ln_final.hook_normalized`` [b,T,d_model] (the final norm's output, weight
  included: what the unembedding reads — the same convention as the transformer wrappers).
- A replacement returned by a hook is used downstream (replacing ``hook_dt`` changes the scan, etc.).

Scan paths: runs that do not hook ``hook_ssm_state`` never materialise the per-step states, with every other site
still firing. On CPU without autograd the scans are the fused C kernels of :mod:`interp.mamba.native` (built on
first use; one pass over the positions with the state in cache); otherwise, or when no C compiler is found, the
torch scans (Mamba-1: :func:`~interp.mamba.scan.diag_scan`; Mamba-2: chunked SSD). Hooking
``blocks.{l}.mixer.hook_ssm_state`` makes that layer materialise every state ``h_t`` (exact, written once into one
buffer from :func:`~interp.mamba.buffers.empty_large`) and fire the hook once with the whole ``[b, T, ...]`` tensor
(TransformerLens style). Patching semantics: a state the hooks
changed (returned different values, or wrote in place) is taken as h_t, and the recurrence is re-run from it:
``y_t = C_t h_t + D x_t`` uses the patched h_t and ``h_{t+1} = Ā_{t+1} h_t + B̄_{t+1} x_{t+1}`` continues from it
(:func:`~interp.mamba.scan.rescan_patched`); so patching step t changes y at t and later steps, never earlier
ones, and a later patched step is again taken verbatim. A cache hook at the same site records the states as the
hook chain returned them (patched steps, not their recomputed successors; ``hook_y`` reflects those).

Padding: with an ``attention_mask``, a padded step contributes nothing: the conv input (``hook_x``) and Δ
(``hook_dt``) are zero there, so the state passes through unchanged (Ā = 1, B̄ = 0) and a left-padded row equals
its unpadded run.

Gradients at ``hook_ssm_state`` (backward hooks, ``run_with_cache(grad=True)``) are total derivatives under the
patching semantics above: a change to h_t is carried forward by the recurrence (taken at the unpatched point).

Head axis: Mamba-2's ``n_heads`` are the SSM heads (``d_head`` = head_dim). Mamba-1 has no heads; ``n_heads`` is
the number of contiguous channel groups used as the implicit-attention head axis: the largest divisor of
``d_inner`` that is at most 8 (:func:`~interp.mamba.config.mamba1_groups`), ``d_head = d_inner // n_heads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interp.hooks import HookRegistry
from interp.mamba.buffers import empty_large
from interp.mamba.config import MambaSpec, mamba1_groups
from interp.mamba.mamba1 import MAMBA1_SITES, Mamba1Mixer
from interp.mamba.mamba2 import MAMBA2_SITES, Mamba2Mixer
from interp.models.base import HookedModel
from interp.models.norms import norm_scale, rescaled

__all__ = ["HookedMamba", "MambaBlock", "RMSNorm", "MixerSites"]


class MixerSites:
    """What a mixer needs from the hook registry: fire and query the sites under one prefix."""

    __slots__ = ("registry", "prefix")

    def __init__(self, registry: HookRegistry, prefix: str) -> None:
        self.registry, self.prefix = registry, prefix

    def fire(self, short: str, act: Tensor) -> Tensor:
        return self.registry.fire(self.prefix + short, act)

    def name(self, short: str) -> str:
        return self.prefix + short

    def hooked(self, short: str) -> bool:
        return self.registry.hooked(self.prefix + short)


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, computed in float32 (HF ``MambaRMSNorm``)."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def normalize(self, x: Tensor) -> Tensor:
        """``x / rms(x)`` in ``x``'s dtype, without the weight."""
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * self.normalize(x)

    def hooked(self, x: Tensor, registry: HookRegistry, site: str) -> Tensor:
        """:meth:`forward`, firing ``site`` (the scale ``[..., 1]``; see :mod:`interp.models.norms`) when hooked."""
        out = self(x)
        if not registry.hooked(site):
            return out
        scale = norm_scale(x, self.eps, centre=False)
        new = registry.fire(site, scale)
        grad = torch.is_grad_enabled() and scale.requires_grad
        if new is scale and not grad:
            return out
        old = norm_scale(x, self.eps, centre=False) if grad else scale  # its own node: the site's gradient is its own
        return rescaled(out, old, new, None)


class MambaBlock(nn.Module):
    """Pre-norm residual block: ``resid + mixer(norm(resid))`` (residual in float32 if the spec says so)."""

    def __init__(self, spec: MambaSpec, layer: int) -> None:
        super().__init__()
        self.spec, self.layer = spec, layer
        self.norm = RMSNorm(spec.d_model, spec.eps)
        self.mixer = Mamba1Mixer(spec) if spec.arch == "mamba" else Mamba2Mixer(spec)

    def forward(self, resid: Tensor, registry: HookRegistry, mask: Tensor | None = None) -> Tensor:
        return self._block(resid, registry, lambda u, sites: self.mixer(u, sites, mask))

    def forward_suffix(self, resid: Tensor, registry: HookRegistry, conv_prefix: Tensor, h0: Tensor | None) -> Tensor:
        """:meth:`forward` on positions ``p..``, continuing a recorded run (see ``Mamba*Mixer.forward_suffix``)."""
        return self._block(resid, registry, lambda u, sites: self.mixer.forward_suffix(u, sites, conv_prefix, h0))

    def _block(self, resid: Tensor, registry: HookRegistry, mix) -> Tensor:
        pre = f"blocks.{self.layer}."
        resid = registry.fire(pre + "hook_resid_pre", resid)
        normed = self.norm.hooked(resid.to(self.norm.weight.dtype), registry, pre + "ln1.hook_scale")
        mixed = mix(normed, MixerSites(registry, pre + "mixer."))
        mixed = registry.fire(pre + "hook_mixer_out", mixed)
        base = resid.float() if self.spec.residual_in_fp32 else resid
        return registry.fire(pre + "hook_resid_post", base + mixed)


class HookedMamba(HookedModel):
    """A Mamba-1 (``arch="mamba"``) or Mamba-2 (``arch="mamba2"``) causal LM with hook sites (module docstring).

    Extra attributes: ``spec`` (:class:`~interp.mamba.config.MambaSpec`), ``d_inner``, ``d_state``.
    """

    has_ssm_state = True
    has_implicit_attention = True
    has_prefix_reuse = True

    def __init__(self, spec: MambaSpec, tokenizer=None) -> None:
        super().__init__(tokenizer)
        self.spec = spec
        self.arch = spec.arch
        self.has_ssm_heads = spec.arch == "mamba2"
        self.n_layers, self.d_model, self.d_vocab = spec.n_layers, spec.d_model, spec.d_vocab
        self.d_inner, self.d_state = spec.d_inner, spec.d_state
        self.n_heads = spec.n_ssm_heads if spec.arch == "mamba2" else mamba1_groups(spec.d_inner)
        self.n_kv_heads = self.n_heads
        self.d_head = spec.d_inner // self.n_heads
        self.embed = nn.Embedding(spec.d_vocab, spec.d_model)
        self.layers = nn.ModuleList(MambaBlock(spec, layer) for layer in range(spec.n_layers))
        self.ln_final = RMSNorm(spec.d_model, spec.eps)
        self.unembed = nn.Linear(spec.d_model, spec.d_vocab, bias=False)
        if spec.tie_embeddings:
            self.unembed.weight = self.embed.weight

    def _site_names(self) -> list[str]:
        mixer = MAMBA1_SITES if self.arch == "mamba" else MAMBA2_SITES
        names = ["hook_embed"]
        for layer in range(self.n_layers):
            names.extend((f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.ln1.hook_scale"))
            names.extend(f"blocks.{layer}.mixer.{s}" for s in mixer)
            names.extend((f"blocks.{layer}.hook_mixer_out", f"blocks.{layer}.hook_resid_post"))
        names.extend(("ln_final.hook_scale", "ln_final.hook_normalized"))
        return names

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        resid = self._registry.fire("hook_embed", self.embed(tokens))
        return self._logits_from(0, resid, attention_mask)

    def _logits_from(self, layer: int, resid: Tensor, attention_mask: Tensor | None) -> Tensor:
        reg = self._registry
        for block in self.layers[layer:]:
            resid = block(resid, reg, attention_mask)
        return self._project_logits(reg.fire("ln_final.hook_normalized", self._final_norm(resid)))

    def _project_logits(self, hidden: Tensor) -> Tensor:
        """``unembed(hidden)`` in float32. Outside autograd on CPU the logits, the largest tensor of a forward
        (``[b, T, d_vocab]``: 206 MB at T 1024 with a 50k vocabulary), are written into a buffer from
        :func:`~interp.mamba.buffers.empty_large` (huge pages, reused once the previous logits are gone): a fresh
        ``torch.empty`` of that size is mapped 4 KiB page by page on first write, at a cost comparable to a good
        part of the matmul itself (``bench/mamba_vs_transformer_lens.py``). Same matmul, bitwise the same values."""
        w = self.unembed.weight
        h = hidden.to(w.dtype)
        if h.device.type != "cpu" or (torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)):
            return self.unembed(h).float()
        out = empty_large((*h.shape[:-1], w.shape[0]), w.dtype, h.device)
        torch.mm(h.reshape(-1, h.shape[-1]), w.t(), out=out.view(-1, w.shape[0]))
        return out.float()

    def _record_prefix(self, tokens: Tensor) -> list[dict[str, Tensor]]:
        """Per layer: the conv inputs ``hook_x`` ``[b, T, conv channels]`` and every SSM state ``hook_ssm_state``."""
        names = [n for layer in range(self.n_layers) for n in (f"blocks.{layer}.mixer.hook_x",
                                                                 f"blocks.{layer}.mixer.hook_ssm_state")]
        _, cache = self.run_with_cache(tokens, names_filter=names, return_type=None)
        return [{"x": cache[f"blocks.{layer}.mixer.hook_x"], "states": cache[f"blocks.{layer}.mixer.hook_ssm_state"]}
                for layer in range(self.n_layers)]

    def _run_suffix(self, layer: int, pos: int, resid: Tensor, prefix, rows: Tensor) -> Tensor:
        """Blocks ``layer..`` on positions ``pos..``: each mixer's conv continues after the recorded conv inputs of
        the ``d_conv - 1`` positions before ``pos`` and its scan starts from the recorded state after ``pos - 1``."""
        reg, k = self._registry, self.spec.d_conv
        for block in self.layers[layer:]:
            rec = prefix.data[block.layer]
            x = rec["x"][:, max(0, pos - k + 1):pos][rows]
            conv_prefix = torch.cat([x.new_zeros(x.shape[0], k - 1 - x.shape[1], x.shape[2]), x], dim=1)
            h0 = rec["states"][:, pos - 1][rows] if pos > 0 else None
            resid = block.forward_suffix(resid, reg, conv_prefix, h0)
        return self._project_logits(reg.fire("ln_final.hook_normalized", self._final_norm(resid)))

    def _final_norm(self, resid: Tensor) -> Tensor:
        return self.ln_final.hooked(resid.to(self.ln_final.weight.dtype), self._registry, "ln_final.hook_scale")

    # ------------------------------------------------------------------ vocabulary
    def _components(self, layer: int) -> dict[str, str]:
        p, m = f"blocks.{layer}.", f"blocks.{layer}.mixer."
        return {"resid_pre": p + "hook_resid_pre", "x": m + "hook_x", "gate": m + "hook_gate",
                "conv": m + "hook_conv_out", "dt": m + "hook_dt", "B": m + "hook_B", "C": m + "hook_C",
                "ssm_state": m + "hook_ssm_state", "ssm": m + "hook_y", "y": m + "hook_y", "out": m + "hook_out",
                "mixer_out": p + "hook_mixer_out", "resid_post": p + "hook_resid_post"}

    def _embed_weight(self) -> Tensor:
        return self.embed.weight

    def _block_module(self, layer: int) -> MambaBlock:
        return self.layers[layer]

    def _norm_weights(self, which: str, layer: int | None) -> dict[str, Tensor]:
        if which == "ln2":
            return super()._norm_weights(which, layer)
        w = (self.ln_final if which == "ln_final" else self.layers[layer].norm).weight
        return {"w": w, "b": w.new_zeros(w.shape)}

    def _output_biases(self, layer: int) -> dict[str, Tensor]:
        bias = self.layers[layer].mixer.out_proj.bias
        return {"mixer": bias if bias is not None else self.embed.weight.new_zeros(self.d_model)}

    def _config_fields(self) -> dict:
        s = self.spec
        return dict(
            d_mlp=None, act_fn="silu", eps=s.eps, normalization_type="RMS", positional_embedding_type="none",
            tie_word_embeddings=s.tie_embeddings, layer_types=(s.arch,) * s.n_layers, d_state=s.d_state,
            d_conv=s.d_conv, d_inner=s.d_inner, n_groups=s.n_groups if s.arch == "mamba2" else None,
            n_ssm_heads=s.n_ssm_heads or None,
            original_architecture="MambaForCausalLM" if s.arch == "mamba" else "Mamba2ForCausalLM",
        )

    def _unembed(self) -> tuple[Tensor, Tensor]:
        w = self.unembed.weight
        return w.T, w.new_zeros(self.d_vocab)

    def _apply_part(self, which: str, layer: int | None, x: Tensor) -> Tensor:
        if which == "ln_final":
            return self._final_norm(x)
        if which == "ln1":
            norm = self.layers[layer].norm
            return norm(x.to(norm.weight.dtype))
        return super()._apply_part(which, layer, x)

    def attention_patterns(self, tokens, layers: int | Sequence[int] | None = None, *, normalize: bool = True,
                           attention_mask: Tensor | None = None, cache=None) -> Tensor:
        """Implicit attention ``[layer, batch, head, query, key]`` (Ali et al. 2024): the ``HookedModel`` contract
        (see there), computed by :func:`interp.mamba.implicit_attention.attention_patterns`; see there for the head
        axis. ``cache``: read Δ, B, C (``blocks.{l}.mixer.hook_dt`` / ``hook_B`` / ``hook_C``) from an
        ``ActivationCache`` of this model instead of running a forward pass (``tokens`` may be None)."""
        from interp.mamba.implicit_attention import attention_patterns

        return attention_patterns(self, tokens, layers, normalize=normalize, attention_mask=attention_mask,
                                  cache=cache)
