"""Hooked Mamba-1 / Mamba-2 models in plain torch (Gu & Dao 2023; Dao & Gu 2024), and their analysis.

``from_hf(hf_model, tokenizer=None) -> HookedMamba`` converts a transformers ``MambaForCausalLM`` /
``Mamba2ForCausalLM``; see :mod:`interp.mamba.model` for the hook sites and the scan paths. ``implicit_attention`` /
``attention_patterns`` (Ali et al. 2024; kernels in :mod:`interp.mamba.alpha`) and ``knockout`` / ``run_with_knockout``
(Endy et al. 2025) analyse them. Scans: :mod:`interp.mamba.native` (fused C kernels, CPU) and :mod:`interp.mamba.scan`
(torch, and the per-step references both are tested against); recorded states live in
:mod:`interp.mamba.buffers`.
"""

from interp.mamba.config import MambaSpec, spec_from_hf
from interp.mamba.convert import from_hf
from interp.mamba.implicit_attention import attention_patterns, implicit_attention
from interp.mamba.knockout import knockout, knockout_hooks, run_with_knockout
from interp.mamba.model import HookedMamba

__all__ = [
    "HookedMamba", "MambaSpec", "from_hf", "spec_from_hf", "implicit_attention", "attention_patterns", "knockout",
    "knockout_hooks", "run_with_knockout",
]
