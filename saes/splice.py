"""``with splice(model, sae):`` runs the model with SAEs (or transcoders) in place of the activations they model.

Inside the block, the activation at each SAE's site is replaced by its reconstruction ``decode(encode(x))``
(Bricken et al. 2023, "Towards Monosemanticity"; the "spliced" model of Gao et al. 2024's CE-loss-recovered metric).
A transcoder (Dunefsky et al. 2024, "Transcoders Find Interpretable LLM Feature Circuits") reads its input site and
replaces its output site, e.g. the MLP's output by its sparse approximation from the MLP's input.

The latents are hook sites while the block lasts: ``<site>.sae.hook_latents`` (``[batch, pos, d_sae]``, firing right
after ``<site>``'s earlier hooks and before the replacement is returned), so ``model.hooks``, ``run_with_hooks`` and
``run_with_cache`` take them like any other site: cache them, or edit them to steer or ablate features.

``error_term=True`` adds the SAE's error ``x - decode(encode(x))`` back (Marks et al. 2024, "Sparse Feature
Circuits"): the forward value is then exactly the model's while the latents are left alone, and edits to the latents
move the output by ``decode(edited) - decode(latents)``. Gradients then reach the upstream model through the SAE
(the error term is held constant, as error nodes are in attribution graphs).

The extra sites are added through the model's private site table (``HookedModel`` has no public way to add sites;
:func:`extra_sites` keeps that in one place).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

from torch import Tensor

from interp.saes.metadata import latent_site_name, resolve_sites

__all__ = ["extra_sites", "splice"]


def extra_sites(model, names_after: Sequence[tuple[str, str]]):
    """Make each ``name`` a hook site of ``model`` for the block, right after site ``after`` in forward order
    (``HookedModel.added_sites``); the splice fires it with ``model.fire_site(name, act)``."""
    for name, after in names_after:
        if name in model.site_names():
            raise ValueError(f"site {name!r} already exists on this model (is an SAE already spliced at {after!r}?)")
    return model.added_sites(names_after)


class _Splice:
    """The hooks of one SAE or transcoder spliced into a model."""

    def __init__(self, model, sae, read_site: str, write_site: str, error_term: bool) -> None:
        self.model, self.sae, self.error_term = model, sae, error_term
        self.read_site, self.write_site = read_site, write_site
        self.latents_site = latent_site_name(write_site)
        self.d_out = sae.cfg.d_out if sae.cfg.d_out is not None else sae.cfg.d_in
        self._x: Tensor | None = None

    def hooks(self) -> list[tuple[str, object]]:
        if self.read_site == self.write_site:
            return [(self.write_site, self.write)]
        return [(self.read_site, self.read), (self.write_site, self.write)]

    def _flat(self, act: Tensor, site: str, width: int, what: str) -> Tensor:
        if act.ndim < 2:
            raise ValueError(f"splice: site {site!r} has shape {tuple(act.shape)}; SAEs splice into per-position "
                             "sites [batch, pos, ...]")
        flat = act.reshape(*act.shape[:2], -1)
        if flat.shape[-1] != width:
            raise ValueError(f"splice: the SAE's {what} is {width} but site {site!r} has width {flat.shape[-1]} "
                             f"(activation shape {tuple(act.shape)})")
        return flat

    def read(self, act: Tensor, *, hook) -> None:
        self._x = self._flat(act, self.read_site, self.sae.cfg.d_in, "d_in")

    def write(self, act: Tensor, *, hook) -> Tensor:
        target = self._flat(act, self.write_site, self.d_out, "d_out" if self.read_site != self.write_site else "d_in")
        if self.read_site == self.write_site:
            x = target
        else:
            x, self._x = self._x, None
            if x is None:
                raise RuntimeError(f"splice: the transcoder's input site {self.read_site!r} did not fire before its "
                                   f"output site {self.write_site!r} in this forward pass (does the run start "
                                   "between them?)")
        sae = self.sae
        z = sae.activation(sae.pre_acts(x.to(sae.W_enc.device, sae.W_enc.dtype)))
        edited = self.model.fire_site(self.latents_site, z)
        if self.error_term:
            delta = sae.decode(edited) - sae.decode(z).detach()  # exactly 0 when the latents were not edited
            out = target.detach() + delta.to(target.device, target.dtype)
        else:
            out = sae.decode(edited).to(target.device, target.dtype)
        return out.reshape(act.shape)


def _pairs(sae, site):
    """[(sae, site or None)] from the forms ``splice`` accepts."""
    from interp.saes.base import SAE

    if isinstance(sae, SAE):
        return [(sae, site)]
    if site is not None:
        raise ValueError("site= is for a single SAE; with several, pass a {site: sae} mapping or SAEs that record "
                         "their sites")
    if isinstance(sae, Mapping):
        items = list(sae.items())
        if not all(isinstance(s, SAE) for _, s in items):
            raise TypeError("sae: a mapping must map sites to SAEs")
        return [(s, key) for key, s in items]
    if isinstance(sae, Sequence) and not isinstance(sae, str) and all(isinstance(s, SAE) for s in sae):
        return [(s, None) for s in sae]
    raise TypeError(f"sae must be an SAE, a sequence of SAEs or a {{site: SAE}} mapping; got {type(sae).__name__}")


@contextmanager
def splice(model, sae, site=None, *, error_term: bool = False, allow_site_mismatch: bool = False) -> Iterator[dict]:
    """Run ``model`` with ``sae`` spliced in for the ``with`` block; see the module docstring.

    ``sae``: one SAE (``site`` None: its recorded site; a transcoder takes a ``(site_in, site_out)`` pair), a list
    of SAEs (each at its recorded site) or a ``{site: sae}`` mapping. A site other than the recorded one needs
    ``allow_site_mismatch=True``. Yields ``{replaced site: latents site}``. Contexts nest with ``model.hooks``:
    hooks entered earlier see the activation before the splice, hooks entered inside see the reconstruction.
    """
    if not isinstance(error_term, bool):
        raise TypeError(f"error_term must be a bool; got {error_term!r}")
    splices = []
    for one, where in _pairs(sae, site):
        read_site, write_site = resolve_sites(one, where, allow_site_mismatch=allow_site_mismatch)
        read_site, write_site = model.check_site(read_site), model.check_site(write_site)
        order = model.site_names()
        if order.index(read_site) > order.index(write_site):
            raise ValueError(f"splice: the transcoder's input site {read_site!r} comes after its output site "
                             f"{write_site!r} in the forward pass")
        splices.append(_Splice(model, one, read_site, write_site, error_term))
    written = [s.write_site for s in splices]
    if len(set(written)) != len(written):
        raise ValueError(f"splice: two SAEs replace the same site ({written}); splice one per site")
    with ExitStack() as stack:
        stack.enter_context(extra_sites(model, [(s.latents_site, s.write_site) for s in splices]))
        stack.enter_context(model.hooks([h for s in splices for h in s.hooks()]))
        yield {s.write_site: s.latents_site for s in splices}
