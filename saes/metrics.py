"""``evaluate(sae, model, site, tokens) -> SAEEval``: reconstruction, sparsity and downstream metrics of an SAE.

Definitions (DEFINITIONS.md; Gao et al. 2024 "Scaling and evaluating sparse autoencoders"; Bricken et al. 2023):

- L0: mean number of non-zero latents per token.
- MSE: mean over tokens of ||x - x_hat||^2 (summed over d_in, the convention of ``interp.saes.base``).
- FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the evaluated tokens.
- Dead latents: latents that never activate on the evaluated tokens; density = fraction of tokens they fire on.
- CE loss recovered = (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean), where "spliced" replaces the
  site's activation by the SAE reconstruction through a hook and "zero ablation" replaces it by zeros.
- KL(clean || spliced): mean over positions of sum_v p_clean(v) (log p_clean(v) - log p_spliced(v)).

With ``skip_special`` the BOS / EOS / pad positions are left untouched by both interventions and excluded from the
reconstruction metrics (an SAE trained without them should not be judged on them); CE and KL cover all positions.

``max_norm_ratio`` does the same for *massive activations* (Sun et al. 2024, "Massive Activations in Large Language
Models"): positions whose activation norm exceeds ``max_norm_ratio`` times the median norm of their batch. In
SmolLM2's residual stream a few tokens near the start of a context reach ~90x the median norm; two or three such rows in
4,000-7,500 carry most of the variance and make FVU look far better than it is on ordinary tokens. The default (None)
keeps every non-special position, the plain definition above; ``n_outliers`` says how many were left out.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.saes.store import _special_ids, load_tokens

__all__ = ["SAEEval", "evaluate"]


@dataclass(frozen=True)
class SAEEval:
    """Metrics of one SAE at one site on a set of tokens (see the module docstring for the definitions)."""

    site: str
    """Hook site the SAE reads and is spliced into."""
    n_tokens: int
    """Activations evaluated (after dropping special positions)."""
    l0: float
    """Mean number of active latents per token."""
    mse: float
    """Mean squared reconstruction error per token (summed over d_in)."""
    fvu: float
    """Fraction of variance unexplained."""
    n_dead: int
    """Latents that never fired on these tokens."""
    n_outliers: int
    """Positions left out as massive activations (``max_norm_ratio``); 0 without it."""
    dead_fraction: float
    """``n_dead / d_sae``."""
    ce_clean: float
    """Next-token cross-entropy of the unmodified model (nats)."""
    ce_spliced: float
    """Cross-entropy with the SAE reconstruction spliced in at the site."""
    ce_zero_ablation: float
    """Cross-entropy with the site's activation set to zero."""
    ce_loss_recovered: float
    """(ce_zero_ablation - ce_spliced) / (ce_zero_ablation - ce_clean); 1 is perfect, 0 is no better than zeros."""
    kl_div: float
    """Mean KL(clean || spliced) of the next-token distributions (nats)."""
    density: Tensor = field(repr=False)
    """Per-latent firing frequency ``[d_sae]`` over the evaluated tokens."""

    def to_dict(self) -> dict[str, Any]:
        """Scalar metrics as a JSON-ready dict (without the density vector)."""
        d = asdict(self)
        d.pop("density")
        return d

    def plot(self):
        """Plotly histogram of log10 feature density (dead latents counted in the title)."""
        import plotly.graph_objects as go

        alive = self.density[self.density > 0]
        fig = go.Figure(go.Histogram(x=torch.log10(alive.double()).tolist(), nbinsx=60, name="latents"))
        fig.update_layout(
            title=(f"Feature density at {self.site}: L0 {self.l0:.1f}, FVU {self.fvu:.3f}, "
                   f"CE recovered {self.ce_loss_recovered:.3f}, dead {self.n_dead}/{self.density.numel()}"),
            xaxis_title="log10(firing frequency)", yaxis_title="latents", bargap=0.02,
        )
        return fig

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" if isinstance(v, float) else
                       f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.to_dict().items())
        return f"<table>{rows}</table>" + self.plot().to_html(full_html=False, include_plotlyjs="cdn")


class _Sums:
    """Running float64 sums over batches."""

    def __init__(self, d_in: int, d_sae: int, device) -> None:
        kw = dict(dtype=torch.float64, device=device)
        self.n, self.sq_err, self.l0 = 0, 0.0, 0.0
        self.x_sum, self.x_sq = torch.zeros(d_in, **kw), torch.zeros(d_in, **kw)
        self.fired = torch.zeros(d_sae, **kw)
        self.ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.kl, self.n_pos, self.n_outliers = 0.0, 0, 0

    def add_recon(self, x: Tensor, x_hat: Tensor, latents: Tensor) -> None:
        x64 = x.double()
        self.n += x.shape[0]
        self.sq_err += float((x_hat.double() - x64).pow(2).sum())
        self.x_sum += x64.sum(0)
        self.x_sq += x64.pow(2).sum(0)
        active = latents != 0
        self.l0 += float(active.sum())
        self.fired += active.sum(0).double()


def _ce(logits: Tensor, tokens: Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy and the number of predicted positions."""
    lp = logits[:, :-1].double().log_softmax(-1)
    tgt = tokens[:, 1:]
    return float(-lp.gather(-1, tgt.unsqueeze(-1)).sum()), tgt.numel()


def _eval_batch(sae, model, site: str, toks: Tensor, special: Tensor, sums: _Sums,
                max_norm_ratio: float | None) -> None:
    logits, cache = model.run_with_cache(toks, names_filter=[site])
    act = cache[site]
    shape = act.shape
    flat = act.reshape(shape[0] * shape[1], -1)
    keep = ~torch.isin(toks, special.to(toks.device)).reshape(-1)
    if max_norm_ratio is not None and keep.any():
        norms = flat.detach().double().norm(dim=-1)
        outlier = keep & (norms > max_norm_ratio * norms[keep].median())
        sums.n_outliers += int(outlier.sum())
        keep &= ~outlier
    x = flat[keep]
    param = next(sae.parameters())
    with torch.no_grad():
        out = sae(x.to(param.device, param.dtype))
    x_hat = out.x_hat.to(act.device, act.dtype)
    sums.add_recon(x, x_hat, out.latents.to(x.device))

    def replace(rows: Tensor):
        def hook(a: Tensor, *, hook) -> Tensor:
            new = a.reshape(shape[0] * shape[1], -1).clone()
            new[keep] = rows
            return new.view(shape)
        return hook

    with torch.no_grad():
        spliced = model.run_with_hooks(toks, fwd_hooks=[(site, replace(x_hat))])
        zeroed = model.run_with_hooks(toks, fwd_hooks=[(site, replace(torch.zeros_like(x_hat)))])
    for key, lg in (("clean", logits), ("spliced", spliced), ("zero", zeroed)):
        total, n = _ce(lg, toks)
        sums.ce[key] += total
    sums.n_pos += n
    lp_clean, lp_spliced = logits.double().log_softmax(-1), spliced.double().log_softmax(-1)
    sums.kl += float((lp_clean.exp() * (lp_clean - lp_spliced)).sum())


def evaluate(sae, model, site: str, tokens, *, context_length: int = 128, batch_size: int = 8,
             max_sequences: int | None = None, skip_special: bool = True, max_norm_ratio: float | None = None,
             progress: bool = True) -> SAEEval:
    """Evaluate ``sae`` at ``site`` of ``model`` on ``tokens`` (a LongTensor [n_seq, pos] or any source
    ``load_tokens`` accepts, cut into ``context_length`` contexts); ``batch_size`` sequences per forward.
    ``max_norm_ratio`` leaves massive-activation positions out of the reconstruction metrics (module docstring)."""
    from tqdm.auto import tqdm

    from interp.checks import check_int
    from interp.saes.store import site_activations

    site = model.check_site(site)
    check_int(batch_size, "batch_size", lo=1)
    check_int(context_length, "context_length", lo=2)
    if max_sequences is not None:
        check_int(max_sequences, "max_sequences", lo=1)
    if max_norm_ratio is not None and not (isinstance(max_norm_ratio, (int, float)) and max_norm_ratio > 1):
        raise ValueError(f"max_norm_ratio must be a number > 1 (a multiple of the median norm) or None; "
                         f"got {max_norm_ratio!r}")
    toks = tokens if isinstance(tokens, Tensor) and tokens.ndim == 2 else load_tokens(tokens, model.tokenizer,
                                                                                        context_length)
    toks = model.check_tokens(toks)
    if toks.shape[1] < 2:
        raise ValueError(f"tokens must have at least 2 positions for next-token loss; got shape {tuple(toks.shape)}")
    if max_sequences is not None:
        toks = toks[:max_sequences]
    width = site_activations(model, site, toks[:1, :2]).shape[-1]
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    if width != d_in:
        raise ValueError(f"d_in mismatch: the SAE has d_in={d_in} but site {site!r} has width {width}")
    special = torch.tensor(_special_ids(model) if skip_special else [], dtype=torch.long)
    sums = _Sums(d_in, d_sae, model.device)
    for start in tqdm(range(0, toks.shape[0], batch_size), desc="evaluate SAE", disable=not progress):
        _eval_batch(sae, model, site, toks[start: start + batch_size], special, sums, max_norm_ratio)
    if sums.n == 0:
        raise ValueError("no tokens left to evaluate after dropping special positions")
    mean = sums.x_sum / sums.n
    total_var = float((sums.x_sq - sums.n * mean.pow(2)).sum())
    ce = {k: v / sums.n_pos for k, v in sums.ce.items()}
    denom = ce["zero"] - ce["clean"]
    density = (sums.fired / sums.n).float().cpu()
    n_dead = int((sums.fired == 0).sum())
    return SAEEval(
        site=site, n_tokens=sums.n, l0=sums.l0 / sums.n, mse=sums.sq_err / sums.n,
        fvu=sums.sq_err / total_var if total_var > 0 else math.nan, n_dead=n_dead, dead_fraction=n_dead / d_sae,
        n_outliers=sums.n_outliers,
        ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_zero_ablation=ce["zero"],
        ce_loss_recovered=(ce["zero"] - ce["spliced"]) / denom if denom != 0 else math.nan,
        kl_div=sums.kl / (toks.shape[0] * toks.shape[1]), density=density,
    )
