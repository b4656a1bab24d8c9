"""Which implementation of the sparse SAE ops runs: Triton on CUDA tensors when triton imports; the fused C kernels
(:mod:`interp.kernels.native`) on float32 CPU tensors when they build; plain torch otherwise.
``INTERP_SAE_KERNEL=native|torch|triton|reference`` overrides (read at each call); ``native`` makes a failed build
an error instead of a warning, and still leaves other dtypes and devices to the torch ops."""

from __future__ import annotations

import os
from types import ModuleType

import torch
from torch import Tensor

from interp.kernels import cpu_ops, native, reference

BACKENDS = ("native", "torch", "triton", "reference")
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
    "native" for float32 CPU tensors where the C kernels build, else "torch"."""
    override = os.environ.get(ENV_VAR, "").strip().lower()
    if override:
        if override not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {override!r}")
        if override == "triton" and _triton_ops is None:
            raise RuntimeError(f"{ENV_VAR}=triton but triton does not import; pip install triton")
        if override == "native":
            native.require()
        return override
    if t.is_cuda and _triton_ops is not None:
        return "triton"
    if t.device.type == "cpu" and t.dtype == torch.float32 and native.available():
        return "native"
    return "torch"


def ops_for(t: Tensor) -> ModuleType:
    """Module with ``sparse_decode``, ``gather_dot``, ``scatter_outer`` for tensors like ``t``."""
    return {"native": native, "torch": cpu_ops, "reference": reference, "triton": _triton_ops}[backend_name(t)]
