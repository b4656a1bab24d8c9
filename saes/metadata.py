"""Where an SAE belongs: the model, the site(s), the contexts and the data it was trained on.

Stored in ``cfg.json`` under ``metadata`` with SAELens's key names (sae-lens 6.54, ``SAEMetadata`` and
``LLM_METADATA_KEYS``), so SAELens reads them too: ``model_name``, ``hook_name``, ``hook_head_index``,
``context_size``, ``prepend_bos``, ``dataset_path``, ``exclude_special_tokens`` and, for transcoders,
``hook_name_out``. Activation normalisation is SAELens's top-level ``normalize_activations`` field (ours: "none").

:func:`resolve_sites` is the one rule every tool follows: use the recorded site by default, and refuse another one
unless the caller says so explicitly (``allow_site_mismatch=True``), naming both sites.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SAEMetadata", "SiteMismatchError", "latent_site_name", "resolve_sites"]

_SAELENS_KEYS = ("model_name", "hook_name", "hook_name_out", "hook_head_index", "context_size", "prepend_bos",
                 "dataset_path", "exclude_special_tokens")


class SiteMismatchError(ValueError):
    """A tool was asked to use an SAE at a site other than the one it was trained on."""


@dataclass(frozen=True)
class SAEMetadata:
    """Provenance of an SAE (SAELens metadata names). Every field may be None when unknown."""

    model_name: str | None = None
    """Model spec the SAE was trained on (what ``interp.load_model`` takes: ``smollm2`` or a folder)."""
    hook_name: str | None = None
    """Site the SAE reads (and, for an SAE, reconstructs), e.g. ``blocks.12.hook_resid_post``."""
    hook_name_out: str | None = None
    """Transcoders: the site the decoder predicts and a splice replaces, e.g. ``blocks.3.hook_mlp_out``."""
    hook_head_index: int | None = None
    """Head index for per-head sites (SAELens convention); None: the whole site."""
    context_size: int | None = None
    """Tokens per training context."""
    prepend_bos: bool | None = None
    """Whether each training context started with BOS."""
    dataset_path: str | None = None
    """Token source of the training run (a path, ``builtin:stdlib-docs``, ...)."""
    exclude_special_tokens: bool | None = None
    """Whether BOS / EOS / pad positions were left out of training."""
    extra: dict = field(default_factory=dict, compare=False)
    """Other metadata keys found in a ``cfg.json`` (kept so a SAELens folder round-trips)."""

    def __post_init__(self) -> None:
        for name in ("model_name", "hook_name", "hook_name_out", "dataset_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"metadata {name} must be a non-empty string or None; got {value!r}")
        for name in ("hook_head_index", "context_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"metadata {name} must be an int >= 0 or None; got {value!r}")
        if self.hook_name_out is not None and self.hook_name is None:
            raise ValueError("metadata hook_name_out needs hook_name (the transcoder's input site)")

    def to_dict(self) -> dict[str, Any]:
        """The ``cfg.json`` ``metadata`` entries (None values left out, ``extra`` merged in)."""
        out = {k: v for k, v in self.extra.items()}
        out.update({k: getattr(self, k) for k in _SAELENS_KEYS if getattr(self, k) is not None})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SAEMetadata:
        """Read SAELens metadata (unknown keys go to ``extra``; pre-6.0 ``hook_point`` is ``hook_name``)."""
        data = dict(data or {})
        if "hook_point" in data and "hook_name" not in data:
            data["hook_name"] = data.pop("hook_point")
        known = {k: data.pop(k) for k in _SAELENS_KEYS if k in data}
        exclude = known.get("exclude_special_tokens")
        if exclude is not None and not isinstance(exclude, bool):  # SAELens also allows a list of token ids
            data["exclude_special_tokens"] = known.pop("exclude_special_tokens")
        return cls(**known, extra=data)

    def replace(self, **changes) -> SAEMetadata:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def is_empty(self) -> bool:
        return not self.to_dict()


def latent_site_name(site: str) -> str:
    """The hook site of the latents of the SAE spliced at ``site`` (``<site>.sae.hook_latents``)."""
    return f"{site}.sae.hook_latents"


def _recorded(sae) -> tuple[str | None, str | None]:
    meta = getattr(sae, "metadata", None)
    if meta is None:
        return None, None
    return meta.hook_name, meta.hook_name_out


def resolve_sites(sae, site=None, *, allow_site_mismatch: bool = False, arg: str = "site") -> tuple[str, str]:
    """``(read_site, write_site)`` for ``sae``: the site its encoder reads and the site its output replaces (the same
    site for an SAE; ``hook_name`` and ``hook_name_out`` for a transcoder).

    ``site`` None uses the recorded site(s); an SAE takes a site name, a transcoder a ``(site_in, site_out)`` pair.
    A site that differs from the recorded one raises :class:`SiteMismatchError` naming both, unless
    ``allow_site_mismatch``. An SAE that records no site needs ``site``.
    """
    transcoder = getattr(sae.cfg, "d_out", None) is not None
    rec_in, rec_out = _recorded(sae)
    recorded = (rec_in, rec_out) if transcoder else (rec_in, rec_in)
    if site is None:
        if rec_in is None or (transcoder and rec_out is None):
            kind = "(site_in, site_out) pair" if transcoder else "site name"
            raise ValueError(f"{arg}: this {'transcoder' if transcoder else 'SAE'} records no site (cfg.json "
                             f"metadata.hook_name{'/hook_name_out' if transcoder else ''} is empty); pass {arg}= "
                             f"(a {kind})")
        return recorded
    if transcoder:
        if not (isinstance(site, (tuple, list)) and len(site) == 2 and all(isinstance(s, str) for s in site)):
            raise TypeError(f"{arg}: a transcoder takes a (site_in, site_out) pair of site names; got {site!r}")
        wanted = (site[0], site[1])
    else:
        if not isinstance(site, str):
            raise TypeError(f"{arg} must be a site name (str) or None for the recorded one; got {site!r}")
        wanted = (site, site)
    if rec_in is not None and wanted != recorded and not allow_site_mismatch:
        show = (lambda pair: f"{pair[0]!r} -> {pair[1]!r}") if transcoder else (lambda pair: repr(pair[0]))
        raise SiteMismatchError(
            f"{arg} {show(wanted)} is not the site this {'transcoder' if transcoder else 'SAE'} was trained on, "
            f"{show(recorded)} (cfg.json metadata.hook_name); leave {arg} out to use the recorded site, or pass "
            f"allow_site_mismatch=True to use it at {show(wanted)} anyway")
    return wanted
