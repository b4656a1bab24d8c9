"""Every model kind the toolkit accepts, as one fixture: the contract suite runs each test on all of them.

Adding an architecture later means adding one entry to ``KINDS`` (a builder returning a :class:`Kind`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import transformers

import interp

KINDS = ("llama", "gpt2", "mamba", "mamba2", "hooked_transformer", "bridge", "nnsight")


@dataclass
class Kind:
    """A wrapped model plus what the contract tests compare it against."""

    name: str
    model: interp.HookedModel
    reference: Callable[[torch.Tensor], torch.Tensor]
    """Logits of the original library's model for the same tokens."""
    log_probs_only: bool = False
    """The reference equals ours only up to a per-position constant (TransformerLens folds/centres weights)."""
    torch_modules: tuple = ()
    """Every torch module whose hook dicts must be empty outside a hooks(...) context."""

    def torch_hooks(self) -> int:
        """Number of hooks attached to any torch module of the model (forward, pre-forward, backward)."""
        seen, n = set(), 0
        for root in self.torch_modules:
            for m in root.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                    n += len(getattr(m, "_backward_pre_hooks", {}))
        return n


def _hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _build(name: str, tiny_dir) -> Kind:
    if name in ("llama", "gpt2", "mamba", "mamba2"):
        path = tiny_dir(name)
        hf = _hf(path)
        model = interp.load_model(path)
        return Kind(name, model, lambda t: hf(t).logits, torch_modules=(model,))
    if name == "nnsight":
        from nnsight import NNsight

        hf = _hf(tiny_dir("llama"))
        ref = _hf(tiny_dir("llama"))
        model = interp.wrap(NNsight(hf), tokenizer=transformers.AutoTokenizer.from_pretrained(tiny_dir("llama")))
        return Kind(name, model, lambda t: ref(t).logits, torch_modules=(model, hf))
    if name == "hooked_transformer":
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_vocab=128,
                                      act_fn="gelu", normalization_type="LN", seed=0)
        tl = HookedTransformer(cfg, tokenizer=transformers.AutoTokenizer.from_pretrained(tiny_dir("llama")))
        tl.eval()
        model = interp.wrap(tl)
        return Kind(name, model, lambda t: tl(t).detach(), torch_modules=(model, tl))
    if name == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        path = tiny_dir("llama")
        bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
        bridge.enable_compatibility_mode()
        hf = _hf(path)
        model = interp.wrap(bridge)
        return Kind(name, model, lambda t: hf(t).logits, log_probs_only=True, torch_modules=(model, bridge))
    raise ValueError(name)


@pytest.fixture(scope="session")
def _kinds(tiny_dir):
    built: dict[str, Kind] = {}

    def get(name: str) -> Kind:
        if name not in built:
            built[name] = _build(name, tiny_dir)
        return built[name]

    return get


@pytest.fixture(params=KINDS)
def kind(request, _kinds) -> Kind:
    return _kinds(request.param)
