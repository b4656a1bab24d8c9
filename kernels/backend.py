"""Which implementation of the sparse SAE ops runs: Triton on CUDA tensors when triton imports, plain torch
otherwise; ``INTERP_SAE_KERNEL=torch|triton|reference`` overrides (read at each call)."""

from __future__ import annotations

import os
from types import ModuleType

from torch import Tensor

from interp.kernels import cpu_ops, reference

BACKENDS = ("torch", "triton", "reference")
ENV_VAR = "INTERP_SAE_KERNEL"

try:  # triton is optional (pyproject extra "kernels"); without it the torch path serves everything
    from interp.kernels import triton_ops as _triton_ops
except ImportError:  # pragma: no cover - depends on the environment
    _triton_ops = None


def triton_available() -> bool:
    """Whether triton imported."""
    return _triton_ops is not None


def backend_name(t: Tensor) -> str:
    """The backend used for tensors like ``t``: the env override, else "triton" for CUDA tensors with triton,
    else "torch"."""
    override = os.environ.get(ENV_VAR, "").strip().lower()
    if override:
        if override not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {override!r}")
        if override == "triton" and _triton_ops is None:
            raise RuntimeError(f"{ENV_VAR}=triton but triton does not import; pip install triton")
        return override
    return "triton" if (t.is_cuda and _triton_ops is not None) else "torch"


def ops_for(t: Tensor) -> ModuleType:
    """Module with ``sparse_decode``, ``gather_dot``, ``scatter_outer`` for tensors like ``t``."""
    return {"torch": cpu_ops, "reference": reference, "triton": _triton_ops}[backend_name(t)]
