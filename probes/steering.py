"""Interventions along a direction: add, subtract or project out a vector at a site, for a forward pass or greedy
generation, through the hook layer; and the effect on a metric as a function of the coefficient.

A direction can be a probe's (:meth:`Probe.direction`), a difference of means (a :class:`MassMeanProbe`), an SAE
decoder row (:func:`sae_direction`) or any vector. Adding ``c * u`` to the residual stream is activation addition
(Turner et al. 2023, "Activation Addition: Steering Language Models Without Optimization"; Marks & Tegmark 2023
steer along mass-mean directions); removing the component ``(x . u) u`` is the projection ablation of Ravfogel et
al. 2020 ("Null It Out", one step of INLP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.probes.base import Probe
from interp.reports import Result

__all__ = ["MODES", "as_direction", "sae_direction", "steer", "steering_hook", "steering_curve", "SteeringResult",
           "logit_diff_metric", "token_prob_metric", "generate_steered"]

MODES = ("add", "subtract", "project")


def as_direction(direction, *, cls: int | str | None = None) -> Tensor:
    """A 1-D float vector from a probe (its :meth:`~Probe.direction`, towards class ``cls``) or a tensor."""
    if isinstance(direction, Probe):
        return direction.direction(cls)
    if isinstance(direction, Tensor) and direction.ndim == 1 and direction.is_floating_point():
        direction = direction.detach()
        if not torch.isfinite(direction).all() or float(direction.norm()) == 0:
            raise ValueError("direction must be a finite, non-zero vector")
        return direction
    raise TypeError(f"direction must be a probe or a 1-D float tensor; got "
                    f"{tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__}")


def sae_direction(sae, latent: int) -> Tensor:
    """Decoder row ``W_dec[latent]`` of an SAE (``W_dec [d_sae, d_in]``, SAELens' layout): the direction latent
    ``latent`` writes."""
    W = getattr(sae, "W_dec", None)
    if not isinstance(W, Tensor) or W.ndim != 2:
        raise TypeError(f"sae must have a decoder matrix W_dec [d_sae, d_in]; got {type(sae).__name__}")
    if not isinstance(latent, int) or isinstance(latent, bool) or not 0 <= latent < W.shape[0]:
        raise IndexError(f"latent must be an int in 0..{W.shape[0] - 1}; got {latent!r}")
    return W[latent].detach().float().clone()


def steering_hook(direction: Tensor, coeff: float = 1.0, *, mode: str = "add", positions=None,
                  normalize: bool = True) -> Callable:
    """A forward hook ``fn(act, *, hook)`` that moves ``act [batch, pos, d]`` along ``direction``:
    ``add``: ``x + coeff * u``; ``subtract``: ``x - coeff * u``; ``project``: ``x - coeff * (x . u) u`` (coeff 1
    removes the component). ``u`` is the unit direction when ``normalize`` (the default), else the vector as given
    (``project`` always uses the unit vector). ``positions``: None (every position) or indices along ``pos``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if isinstance(coeff, Tensor) and coeff.numel() == 1:
        coeff = float(coeff)
    if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or coeff != coeff:
        raise ValueError(f"coeff must be a number; got {coeff!r}")
    vec = direction.detach().float()
    unit = vec / vec.norm()
    u = unit if (normalize or mode == "project") else vec
    pos = None if positions is None else [positions] if isinstance(positions, int) else list(positions)

    def hook(act: Tensor, *, hook) -> Tensor:
        shape = act.shape
        x = act.reshape(shape[0], shape[1], -1) if act.ndim != 3 else act
        if x.shape[-1] != u.shape[0]:
            raise ValueError(f"steer at {hook.name!r}: the direction has {u.shape[0]} entries but the site has "
                             f"{x.shape[-1]} features per position")
        v = u.to(device=x.device, dtype=x.dtype)
        if mode == "project":
            delta = -coeff * (x @ v)[..., None] * v
        else:
            delta = (coeff if mode == "add" else -coeff) * v.expand_as(x)
        if pos is not None:
            keep = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
            keep[[p for p in pos if -x.shape[1] <= p < x.shape[1]]] = True
            delta = delta * keep[None, :, None].to(x.dtype)
        return (x + delta).reshape(shape)

    return hook


@contextmanager
def steer(model, site: str, direction, coeff: float = 1.0, *, mode: str = "add", positions=None,
          normalize: bool = True, cls: int | str | None = None) -> Iterator[Any]:
    """Within the block, every forward pass (and ``model.generate``) of ``model`` moves the activation at ``site``
    along ``direction`` (a probe, or a vector; see :func:`steering_hook`)::

        with steer(model, "blocks.12.hook_resid_post", probe, 8.0):
            model.generate("I watched the film. It was", 20)
    """
    site = model.check_site(site)
    with model.hooks([(site, steering_hook(as_direction(direction, cls=cls), coeff, mode=mode, positions=positions,
                                           normalize=normalize))]):
        yield model


def logit_diff_metric(model, positive: Sequence[str], negative: Sequence[str]) -> Callable[[Tensor], Tensor]:
    """Metric on last-position logits ``[b, vocab]``: mean logit of the ``positive`` tokens minus mean logit of
    the ``negative`` ones (each must be a single token, e.g. ``" great"``)."""
    pos = torch.tensor([model.to_single_token(t) for t in positive])
    neg = torch.tensor([model.to_single_token(t) for t in negative])

    def metric(logits: Tensor) -> Tensor:
        return logits[:, pos.to(logits.device)].mean(1) - logits[:, neg.to(logits.device)].mean(1)

    metric.__name__ = "logit difference"
    return metric


def token_prob_metric(model, tokens: Sequence[str]) -> Callable[[Tensor], Tensor]:
    """Metric: the total next-token probability of ``tokens`` (single tokens) at the last position."""
    ids = torch.tensor([model.to_single_token(t) for t in tokens])

    def metric(logits: Tensor) -> Tensor:
        return logits.float().softmax(-1)[:, ids.to(logits.device)].sum(1)

    metric.__name__ = f"P({'|'.join(tokens)})"
    return metric


@dataclass(frozen=True)
class SteeringResult(Result):
    """A metric of the last-position logits as a function of the steering coefficient."""

    site: str
    """Where the direction was applied."""
    mode: str
    """``add``, ``subtract`` or ``project``."""
    coeffs: Tensor
    """``[c]`` coefficients."""
    values: Tensor
    """``[c, text]`` the metric per text."""
    metric: str
    """The metric's name."""
    site_norm: float
    """Mean norm of the unsteered activation at ``site`` (last positions): the scale for the coefficients."""
    samples: dict = field(default_factory=dict)
    """Optional coefficient -> greedy continuation (see :func:`generate_steered`)."""

    title = "Steering along a direction"

    @property
    def mean(self) -> Tensor:
        """``[c]`` the metric averaged over texts."""
        return self.values.mean(1)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "mode": self.mode, "coeffs": self.coeffs, "mean": self.mean,
                "values": self.values, "metric": self.metric, "site_norm": self.site_norm,
                "samples": {str(k): v for k, v in self.samples.items()}}

    def plot(self):
        import plotly.graph_objects as go

        x = self.coeffs.tolist()
        lo, hi = self.values.min(1).values.tolist(), self.values.max(1).values.tolist()
        fig = go.Figure()
        fig.add_scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0), opacity=0.2,
                        name="range over texts")
        fig.add_scatter(x=x, y=self.mean.tolist(), mode="lines+markers", name=f"mean {self.metric}")
        fig.update_layout(title=f"{self.mode} along a direction at {self.site} (activation norm "
                                f"≈ {self.site_norm:.3g})", xaxis_title="coefficient", yaxis_title=self.metric,
                          template="plotly_white", height=400)
        return fig

    def _html_sections(self) -> list:
        from interp.reports.html import escape, figure_html, table_html

        out = [figure_html(self.plot())]
        if self.samples:
            out.append(table_html([(k, escape(v)) for k, v in self.samples.items()], ["coefficient", "greedy text"]))
        return out


@torch.no_grad()
def steering_curve(model, texts: Sequence[str], site: str, direction, coeffs: Sequence[float],
                   metric: Callable[[Tensor], Tensor], *, mode: str = "add", positions=None, normalize: bool = True,
                   cls: int | str | None = None, batch_size: int = 16) -> SteeringResult:
    """``metric(last-position logits [b, vocab]) -> [b]`` on ``texts`` with ``direction`` applied at ``site`` for
    each coefficient (the rows' own last real token is read, whatever the padding)."""
    model = as_hooked(model, "steering_curve")
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a non-empty list of strings")
    coeffs = [float(c) for c in coeffs]
    if not coeffs:
        raise ValueError("coeffs is empty")
    site = model.check_site(site)
    vec = as_direction(direction, cls=cls)
    norms: list[Tensor] = []

    def run(coeff: float | None) -> Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens, mask = model.to_tokens(list(texts[i: i + batch_size]), return_attention_mask=True)
            last = model.last_positions(mask)
            hooks = []
            if coeff is None:
                def grab(act, *, hook, last=last):
                    rows = act.reshape(act.shape[0], act.shape[1], -1)[torch.arange(act.shape[0]), last]
                    norms.append(rows.float().norm(dim=-1).cpu())
                hooks.append((site, grab))
            else:
                hooks.append((site, steering_hook(vec, coeff, mode=mode, positions=positions, normalize=normalize)))
            logits = model.run_with_hooks(tokens, hooks, attention_mask=mask)
            value = metric(logits[torch.arange(tokens.shape[0]), last])
            if not isinstance(value, Tensor) or value.shape != (tokens.shape[0],):
                raise ValueError(f"metric must return one number per text [batch]; got {value!r}")
            out.append(value.float().cpu())
        return torch.cat(out)

    run(None)
    values = torch.stack([run(c) for c in coeffs])
    return SteeringResult(site, mode, torch.tensor(coeffs), values, getattr(metric, "__name__", "metric"),
                          float(torch.cat(norms).mean()))


def generate_steered(model, prompt: str, site: str, direction, coeffs: Sequence[float], *, max_new_tokens: int = 20,
                     mode: str = "add", positions=None, normalize: bool = True,
                     cls: int | str | None = None) -> dict[float, str]:
    """Greedy continuations of ``prompt`` with ``direction`` applied at ``site``, per coefficient (the hooks fire
    at every generation step)."""
    model = as_hooked(model, "generate_steered")
    vec = as_direction(direction, cls=cls)
    out = {}
    n_prompt = model.to_tokens(prompt).shape[1]
    for c in coeffs:
        with steer(model, site, vec, float(c), mode=mode, positions=positions, normalize=normalize):
            ids = model.generate(prompt, max_new_tokens, stop_at_eos=False)
        out[float(c)] = model.to_string(ids[0, n_prompt:])
    return out
