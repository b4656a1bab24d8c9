"""Exceptions shared across the toolkit."""

from __future__ import annotations

__all__ = ["CapabilityError", "MemoryBudgetError"]


class CapabilityError(TypeError):
    """The model cannot do what was asked because of its architecture (e.g. ``W_Q`` of a Mamba model, which has no
    attention heads). Analyses catch it to skip a kind of model with a stated reason.

    A ``TypeError`` rather than an ``AttributeError``: ``torch.nn.Module.__getattr__`` would hide the message of an
    ``AttributeError`` raised inside a property.
    """


class MemoryBudgetError(MemoryError):
    """A cache, buffer or chunk of work would not fit the memory budget (see :mod:`interp.models.memory`); the message
    says the estimate, the budget and how to reduce one or raise the other."""
