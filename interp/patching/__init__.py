"""Activation, attribution and path patching over every model kind, batched (see :mod:`interp.patching.engine`).

>>> from interp import patching
>>> metric = patching.logit_diff(" Paris", " Rome")
>>> patching.patch_residual(model, "The Eiffel Tower is in", "The Colosseum is in", metric)   # [layer, pos]
"""

from interp.patching.activation import (
    patch_activations,
    patch_attn_out,
    patch_head_k,
    patch_head_pattern,
    patch_head_q,
    patch_head_v,
    patch_heads,
    patch_mixer,
    patch_mixer_out,
    patch_mlp_out,
    patch_resid_mid,
    patch_residual,
    patch_ssm_state,
)
from interp.patching.attribution import attribution_patch
from interp.patching.metrics import LogitDiff, Metric, TargetProb, logit_diff, target_prob
from interp.patching.path import path_patch
from interp.patching.result import PatchResult, sweep
from interp.patching.sites import SITES

__all__ = [
    "patch_activations", "patch_residual", "patch_resid_mid", "patch_attn_out", "patch_mlp_out", "patch_mixer_out",
    "patch_mixer", "patch_ssm_state", "patch_heads", "patch_head_q", "patch_head_k", "patch_head_v",
    "patch_head_pattern", "attribution_patch", "path_patch", "sweep", "PatchResult", "logit_diff", "target_prob",
    "Metric", "LogitDiff", "TargetProb", "SITES",
]
