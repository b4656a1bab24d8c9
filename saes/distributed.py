"""Data-parallel SAE training with ``torch.distributed`` (gloo on CPU, nccl on GPU), launched by ``torchrun``.

Launch: ``torchrun --nproc_per_node 2 -m interp.saes.cli train --site ... --activations DIR ...``; each process
reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment that torchrun sets.

Why an explicit all-reduce rather than ``DistributedDataParallel``: the trainer calls
``sae.training_forward(...)``, not ``sae(...)``, and DDP only prepares its gradient reducer inside its own
``forward``. An SAE has four to five large parameters, so one flat bucket per step (concatenate the gradients,
one ``all_reduce``, divide by the world size, copy back) costs the same as DDP's bucketing without the wrapper.
Because each rank's loss is a mean over an equal share of the global batch, the averaged gradient equals the
gradient of the global-batch mean (up to float rounding in the sum).

Everything else the ranks must agree on is reduced too: which latents fired (dead-latent statistics, logical OR),
the logged metrics (mean), and the initial parameters (broadcast from rank 0). Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistInfo", "all_any", "all_mean", "average_gradients", "barrier", "broadcast_module", "setup", "teardown"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a data-parallel run."""

    rank: int
    """This process's rank (0 in a single-process run)."""
    world_size: int
    """Number of processes (1 in a single-process run)."""
    device: str
    """Device this rank computes on (``cuda:<LOCAL_RANK>`` under torchrun with CUDA)."""
    owns_group: bool = False
    """Whether ``setup`` created the process group (and ``teardown`` should destroy it)."""

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group with more than one rank is in use."""
        return self.world_size > 1


def setup(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun described in the environment (if ``WORLD_SIZE`` > 1)."""
    from interp.checks import check_device

    check_device(device, "device")  # e.g. 'cuda' without CUDA: one clear error before any work
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, device)
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns)


def teardown(info: DistInfo, *, completed: bool = True) -> None:
    """Leave the process group (if this module joined one). After a ``completed`` run the ranks first meet at a
    barrier, so that no rank closes its connections while a peer is still finishing its last collective (a
    failed run skips it: its peers may be stuck in another collective and never arrive)."""
    if info.owns_group and dist.is_initialized():
        if completed and info.active:
            dist.barrier()
        dist.destroy_process_group()


def average_gradients(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks with one flat all-reduce (missing gradients count as zero)."""
    if not info.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def all_mean(t: Tensor, info: DistInfo) -> Tensor:
    """Mean of ``t`` over ranks (returns ``t`` unchanged in a single process)."""
    if not info.active:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_any(mask: Tensor, info: DistInfo) -> Tensor:
    """Logical OR of a BoolTensor over ranks."""
    if not info.active:
        return mask
    t = mask.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()


@torch.no_grad()
def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if info.active:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.active:
        dist.barrier()
