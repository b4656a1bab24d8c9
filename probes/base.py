"""What every fitted probe shares: a linear read-out ``(x - mean) / scale @ W + b``, its metadata, and files.

A probe knows the site and position rule it was fitted at, its class names, and the feature normalisation it was
fitted with (``mean``/``scale``, or none). :meth:`Probe.save` writes ``probe.safetensors`` (tensors) and
``probe.json`` (everything else); :func:`load_probe` reads any family back (never pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from interp.atomic import atomic_dir

__all__ = ["Probe", "load_probe"]


class Probe(nn.Module):
    """A fitted linear probe: decision values ``(x - mean) / scale @ W + b`` (``W [d_in, k]``)."""

    family: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Probe]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            Probe._registry[cls.family] = cls

    def _setup(self, W: Tensor, b: Tensor, *, site: str | None = None, position: str | None = None,
               classes: list | None = None, mean: Tensor | None = None, scale: Tensor | None = None,
               hyper: dict[str, Any] | None = None, converged: bool | None = None) -> None:
        self.W = nn.Parameter(W.detach().to(torch.float64).clone(), requires_grad=False)
        self.b = nn.Parameter(b.detach().to(torch.float64).clone(), requires_grad=False)
        self.d_in = int(W.shape[0])
        self.site, self.position = site, None if position is None else str(position)
        self.classes = None if classes is None else list(classes)
        if (mean is None) != (scale is None):
            raise ValueError("mean and scale come together (a feature normalisation) or not at all")
        self.register_buffer("mean", None if mean is None else mean.detach().double().clone())
        self.register_buffer("scale", None if scale is None else scale.detach().double().clone())
        self.hyper = dict(hyper or {})
        self.converged = converged

    # ------------------------------------------------------------------ read-out
    def _inputs(self, X: Tensor) -> Tensor:
        if not isinstance(X, Tensor) or X.ndim != 2 or X.shape[1] != self.d_in:
            raise ValueError(f"X must be [n, {self.d_in}]; got "
                             f"{tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__}")
        X = X.double()
        return X if self.mean is None else (X - self.mean) / self.scale

    def forward(self, X: Tensor) -> Tensor:
        """Decision values ``[n, k]``."""
        return self._inputs(X) @ self.W + self.b

    def direction(self, cls: int | str | None = None) -> Tensor:
        """The unit vector in activation space along which the decision value grows fastest (``W[:, c] / scale``,
        normalised): for a two-class probe towards its second class (``cls`` names the side), for a multi-class
        probe towards class ``cls``. Steer along it with :func:`interp.probes.steer`."""
        if self.W.shape[1] == 1:
            sign = -1.0 if cls is not None and self._class_index(cls) == 0 else 1.0
            w = sign * self.W[:, 0]
        else:
            w = self.W[:, self._class_index(cls)]
        if self.scale is not None:
            w = w / self.scale
        norm = w.norm()
        if norm == 0:
            raise ValueError("this probe's weight vector is zero: it has no direction")
        return (w / norm).float()

    def _class_index(self, cls: int | str | None) -> int:
        if cls is None:
            raise ValueError(f"cls: a {self.W.shape[1]}-class probe has one direction per class; name one of "
                             f"{self.classes or list(range(self.W.shape[1]))}")
        if self.classes and cls in self.classes:
            return self.classes.index(cls)
        if isinstance(cls, int) and not isinstance(cls, bool) and 0 <= cls < max(2, self.W.shape[1]):
            return cls
        raise ValueError(f"cls {cls!r} is not a class of this probe ({self.classes or 'indices'})")

    # ------------------------------------------------------------------ files
    def _meta(self) -> dict[str, Any]:
        return {"family": self.family, "d_in": self.d_in, "k": int(self.W.shape[1]), "site": self.site,
                "position": self.position, "classes": self.classes, "hyper": self.hyper,
                "normalization": None if self.mean is None else "standardize", "converged": self.converged}

    def save(self, folder: str | Path) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` into ``folder`` (atomically)."""
        from safetensors.torch import save_file

        tensors = {"W": self.W.detach().contiguous(), "b": self.b.detach().contiguous()}
        if self.mean is not None:
            tensors.update(mean=self.mean.contiguous(), scale=self.scale.contiguous())
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "probe.safetensors"))
            (tmp / "probe.json").write_text(json.dumps(self._meta(), indent=1))
        return Path(folder)

    @classmethod
    def _from_files(cls, meta: dict, tensors: dict[str, Tensor]) -> Probe:
        probe = cls.__new__(cls)
        nn.Module.__init__(probe)
        probe._setup(tensors["W"], tensors["b"], site=meta.get("site"), position=meta.get("position"),
                     classes=meta.get("classes"), mean=tensors.get("mean"), scale=tensors.get("scale"),
                     hyper=meta.get("hyper") or ({"C": meta["C"]} if "C" in meta else None),
                     converged=meta.get("converged"))
        return probe

    @classmethod
    def load(cls, folder: str | Path) -> Probe:
        """Read a folder written by :meth:`save` (any family when called on :class:`Probe`)."""
        return load_probe(folder, expect=None if cls is Probe else cls)

    def extra_repr(self) -> str:
        return f"family={self.family}, d_in={self.d_in}, k={self.W.shape[1]}, site={self.site!r}"


def load_probe(folder: str | Path, expect: type[Probe] | None = None) -> Probe:
    """Read a probe folder (``probe.json`` + ``probe.safetensors``) of any family."""
    import interp.probes  # noqa: F401  (registers every family)
    from interp.files import load_safetensors, read_json_object

    folder = Path(folder)
    if not (folder / "probe.json").is_file():
        raise FileNotFoundError(f"folder: {folder} holds no probe.json (write it with probe.save)")
    meta = read_json_object(folder / "probe.json", "a probe's metadata")
    family = meta.get("family", "logistic")  # folders written before families existed are logistic
    kind = Probe._registry.get(family)
    if kind is None:
        raise ValueError(f"{folder}/probe.json: unknown probe family {family!r}; known: {sorted(Probe._registry)}")
    if expect is not None and not issubclass(kind, expect):
        raise ValueError(f"{folder} holds a {family!r} probe, not a {expect.__name__}")
    tensors = load_safetensors(folder / "probe.safetensors")
    missing = [k for k in ("W", "b") if k not in tensors]
    if missing:
        raise ValueError(f"{folder / 'probe.safetensors'}: missing tensors {missing}; expected a probe's W and b")
    return kind._from_files(meta, tensors)
