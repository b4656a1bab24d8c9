"""Hooked Mamba-1 / Mamba-2 models in plain torch (Gu & Dao 2023; Dao & Gu 2024).

``from_hf(hf_model, tokenizer=None) -> HookedMamba`` converts a transformers ``MambaForCausalLM`` /
``Mamba2ForCausalLM``; see :mod:`interp.mamba.model` for the hook sites and the scan paths.
"""

from interp.mamba.config import MambaSpec, spec_from_hf
from interp.mamba.convert import from_hf
from interp.mamba.model import HookedMamba

__all__ = ["HookedMamba", "MambaSpec", "from_hf", "spec_from_hf"]
