"""Exceptions shared across the toolkit."""

from __future__ import annotations

__all__ = ["CapabilityError", "CheckpointError", "MemoryBudgetError", "import_failure"]


class CapabilityError(TypeError):
    """The model cannot do what was asked because of its architecture (e.g. ``W_Q`` of a Mamba model, which has no
    attention heads). Analyses catch it to skip a kind of model with a stated reason.

    A ``TypeError`` rather than an ``AttributeError``: ``torch.nn.Module.__getattr__`` would hide the message of an
    ``AttributeError`` raised inside a property.
    """


class MemoryBudgetError(MemoryError):
    """A cache, buffer or chunk of work would not fit the memory budget (see :mod:`interp.models.memory`); the message
    says the estimate, the budget and how to reduce one or raise the other."""


class CheckpointError(ValueError):
    """The files of a checkpoint folder are unreadable or do not describe the model they claim: a truncated or
    corrupt safetensors file, an unreadable config.json or tokenizer file, a missing, unexpected, mis-shaped or
    non-finite weight. Only this error means "the files are bad"; a failure of the environment (an ImportError, a
    transformers version without a needed class) is raised as what it is (see :func:`import_failure`)."""


def import_failure(err: ImportError, doing: str) -> ImportError:
    """An ImportError for ``err`` (raised while ``doing``) that says which module failed and where it came from,
    and, when an installed distribution provides that name from another place, that something shadows it."""
    import importlib.metadata
    import sys

    name = err.name or ""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) or err.path
    lines = str(err).strip().splitlines()
    text = f"{doing} failed: {type(err).__name__}: {lines[0] if lines else ''}"
    if name:
        text += f". Module {name!r} " + (f"was imported from {origin}" if origin else "could not be found")
        top = name.split(".")[0]
        dists = importlib.metadata.packages_distributions().get(top, [])
        for dist in dists:
            try:
                record = importlib.metadata.distribution(dist)
                installed = record.locate_file(top)
            except Exception:  # a broken distribution record: say nothing of it
                continue
            if origin and str(origin).startswith(str(installed)):
                text += f" (the installed distribution {dist} {record.version})"
                break
            if origin:
                text += (f"; the installed distribution {dist!r} provides {top!r} at {installed}, so a folder "
                         "earlier on sys.path (the current directory?) shadows it: start Python elsewhere or rename "
                         "that folder")
                break
        else:
            if isinstance(err, ModuleNotFoundError) and not dists:
                text += f"; install the package that provides {top!r}"
    new = ImportError(text, name=err.name, path=err.path)
    new.__cause__ = err
    return new
