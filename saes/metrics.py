"""``evaluate(sae, model, site, tokens) -> SAEEval``: reconstruction, sparsity and downstream metrics of an SAE.

Definitions (DEFINITIONS.md; Gao et al. 2024 "Scaling and evaluating sparse autoencoders"; Bricken et al. 2023):

- L0: mean number of non-zero latents per token.
- MSE: mean over tokens of ||x - x_hat||^2 (summed over d_in, the convention of ``interp.saes.base``).
- FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the evaluated tokens.
- Dead latents: latents that never activate on the evaluated tokens; density = fraction of tokens they fire on.
- CE loss recovered = (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean), where "spliced" replaces the
  site's activation by the SAE reconstruction through a hook and "zero ablation" replaces it by zeros.
- KL(clean || spliced): mean over positions of sum_v p_clean(v) (log p_clean(v) - log p_spliced(v)).

A transcoder (Dunefsky et al. 2024) is evaluated the same way at its output site: the reconstruction metrics compare
its prediction with the activation there (e.g. FVU of the MLP output), and the splice replaces that site (e.g. the
transcoder in place of the MLP); zero ablation zeroes it.

The site is the one the SAE records (``sae.metadata``); another one raises unless ``allow_site_mismatch=True``.

Speed: the spliced and zero-ablated runs share every layer before the site with the clean run, so they start from
the clean run's cached residual stream (``model(resid, start_at_layer=l)``): at the replaced residual itself for
``hook_resid_pre`` / ``hook_resid_post`` sites, and at ``blocks.{l}.hook_resid_pre`` with a replacing hook for any
other site of block ``l``. ``reuse_prefix=False`` recomputes the whole forward pass instead (same numbers).

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

from interp.hooks import layer_of
from interp.reports import Result
from interp.saes.metadata import resolve_sites
from interp.saes.store import _special_ids, load_tokens

__all__ = ["SAEEval", "evaluate"]


@dataclass(frozen=True)
class SAEEval(Result):
    """Metrics of one SAE at one site on a set of tokens (see the module docstring for the definitions)."""

    title = "SAE evaluation"

    site: str
    """Hook site the SAE reads (and, for an SAE, is spliced into)."""
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
    site_out: str | None = None
    """Transcoders: the site predicted and replaced (the metrics above are about it); None for an SAE."""

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
        where = self.site if self.site_out is None else f"{self.site} -> {self.site_out}"
        fig.update_layout(
            title=(f"Feature density at {where}: L0 {self.l0:.1f}, FVU {self.fvu:.3f}, "
                   f"CE recovered {self.ce_loss_recovered:.3f}, dead {self.n_dead}/{self.density.numel()}"),
            xaxis_title="log10(firing frequency)", yaxis_title="latents", bargap=0.02,
        )
        return fig

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" if isinstance(v, float) else
                       f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.to_dict().items())
        from interp.reports.html import notebook_figure

        return f"<table>{rows}</table>" + notebook_figure(self.plot())

    def _html_sections(self) -> list:
        from interp.reports.html import figure_html, table_html

        return [table_html(list(self.to_dict().items()), ["metric", "value"]), figure_html(self.plot())]


class _Sums:
    """Running float64 sums over batches."""

    def __init__(self, d_out: int, d_sae: int, device) -> None:
        kw = dict(dtype=torch.float64, device=device)
        self.n, self.sq_err, self.l0 = 0, 0.0, 0.0
        self.x_sum, self.x_sq = torch.zeros(d_out, **kw), torch.zeros(d_out, **kw)
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


def _add_losses(sums: _Sums, tokens: Tensor, clean: Tensor, spliced: Tensor, zeroed: Tensor) -> None:
    """Add the summed next-token cross-entropies of the three runs and the summed KL(clean || spliced) to ``sums``.

    float64 log-softmax, one sequence at a time: each run's log-probabilities are computed once and the temporaries
    stay ``[pos, d_vocab]``-sized (a whole batch in float64 is hundreds of MB for a 49k vocabulary)."""
    for i in range(tokens.shape[0]):
        tgt = tokens[i, 1:, None]
        lp_clean, lp_spliced = clean[i].double().log_softmax(-1), spliced[i].double().log_softmax(-1)
        lp_zero = zeroed[i, :-1].double().log_softmax(-1)
        sums.ce["clean"] += float(-lp_clean[:-1].gather(-1, tgt).sum())
        sums.ce["spliced"] += float(-lp_spliced[:-1].gather(-1, tgt).sum())
        sums.ce["zero"] += float(-lp_zero.gather(-1, tgt).sum())
        sums.kl += float((lp_clean.exp() * (lp_clean - lp_spliced)).sum())
    sums.n_pos += tokens.shape[0] * (tokens.shape[1] - 1)


class _Rerun:
    """Runs the model again with the written site replaced, from the clean run's cache where possible."""

    def __init__(self, model, write_site: str, reuse_prefix: bool) -> None:
        self.model, self.site = model, write_site
        layer = layer_of(write_site)
        self.layer = layer if reuse_prefix else None
        self.start_site = None if self.layer is None else f"blocks.{layer}.hook_resid_pre"

    def names(self) -> list[str]:
        return [] if self.start_site is None else [self.start_site]

    def __call__(self, toks: Tensor, cache, replaced: Tensor) -> Tensor:
        model, site, layer = self.model, self.site, self.layer
        hook = [(site, lambda a, *, hook: replaced)]
        if layer is None:
            return model.run_with_hooks(toks, fwd_hooks=hook)
        if site == self.start_site:
            return model(replaced, start_at_layer=layer)
        if site == f"blocks.{layer}.hook_resid_post" and layer + 1 < model.n_layers:
            return model(replaced, start_at_layer=layer + 1)
        return model.run_with_hooks(cache[self.start_site], fwd_hooks=hook, start_at_layer=layer)


def _eval_batch(sae, model, sites: tuple[str, str], toks: Tensor, special: Tensor, sums: _Sums,
                max_norm_ratio: float | None, rerun: _Rerun) -> None:
    read_site, write_site = sites
    names = list(dict.fromkeys([read_site, write_site, *rerun.names()]))
    logits, cache = model.run_with_cache(toks, names_filter=names)
    target = cache[write_site]
    shape = target.shape
    n = shape[0] * shape[1]
    flat = target.reshape(n, -1)
    x_in = cache[read_site].reshape(n, -1)
    keep = ~torch.isin(toks, special.to(toks.device)).reshape(-1)
    if max_norm_ratio is not None and keep.any():
        norms = flat.detach().double().norm(dim=-1)
        outlier = keep & (norms > max_norm_ratio * norms[keep].median())
        sums.n_outliers += int(outlier.sum())
        keep &= ~outlier
    param = sae.W_enc
    with torch.no_grad():
        out = sae(x_in[keep].to(param.device, param.dtype))
    x_hat = out.x_hat.to(target.device, target.dtype)
    sums.add_recon(flat[keep], x_hat, out.latents.to(target.device))

    def replaced(rows: Tensor) -> Tensor:
        new = flat.clone()
        new[keep] = rows
        return new.view(shape)

    with torch.no_grad():
        spliced = rerun(toks, cache, replaced(x_hat))
        zeroed = rerun(toks, cache, replaced(torch.zeros_like(x_hat)))
    _add_losses(sums, toks, logits, spliced, zeroed)


def evaluate(sae, model, site=None, tokens=None, *, context_length: int = 128, batch_size: int = 8,
             max_sequences: int | None = None, skip_special: bool = True, max_norm_ratio: float | None = None,
             allow_site_mismatch: bool = False, reuse_prefix: bool = True, progress: bool = True) -> SAEEval:
    """Evaluate ``sae`` on ``model`` over ``tokens`` (a LongTensor [n_seq, pos] or any source ``load_tokens``
    accepts, cut into ``context_length`` contexts); ``batch_size`` sequences per forward.

    ``site`` None: the site the SAE records (a transcoder: its ``(site_in, site_out)`` pair); another site raises
    unless ``allow_site_mismatch``. ``max_norm_ratio`` leaves massive-activation positions out of the reconstruction
    metrics; ``reuse_prefix`` starts the spliced runs from the cached residual stream (module docstring)."""
    from tqdm.auto import tqdm

    from interp.checks import check_int

    read_site, write_site = resolve_sites(sae, site, allow_site_mismatch=allow_site_mismatch)
    read_site, write_site = model.check_site(read_site), model.check_site(write_site)
    check_int(batch_size, "batch_size", lo=1)
    check_int(context_length, "context_length", lo=2)
    if max_sequences is not None:
        check_int(max_sequences, "max_sequences", lo=1)
    if max_norm_ratio is not None and not (isinstance(max_norm_ratio, (int, float)) and max_norm_ratio > 1):
        raise ValueError(f"max_norm_ratio must be a number > 1 (a multiple of the median norm) or None; "
                         f"got {max_norm_ratio!r}")
    toks = eval_tokens(model, tokens, context_length, max_sequences)
    if toks.shape[1] < 2:
        raise ValueError(f"tokens must have at least 2 positions for next-token loss; got shape {tuple(toks.shape)}")
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    d_out = sae.cfg.d_out if sae.cfg.d_out is not None else d_in
    check_widths(sae, model, read_site, write_site, toks)
    special = torch.tensor(_special_ids(model) if skip_special else [], dtype=torch.long)
    sums = _Sums(d_out, d_sae, model.device)
    rerun = _Rerun(model, write_site, reuse_prefix)
    for start in tqdm(range(0, toks.shape[0], batch_size), desc="evaluate SAE", disable=not progress):
        _eval_batch(sae, model, (read_site, write_site), toks[start: start + batch_size], special, sums,
                    max_norm_ratio, rerun)
    if sums.n == 0:
        raise ValueError("no tokens left to evaluate after dropping special positions")
    mean = sums.x_sum / sums.n
    total_var = float((sums.x_sq - sums.n * mean.pow(2)).sum())
    ce = {k: v / sums.n_pos for k, v in sums.ce.items()}
    denom = ce["zero"] - ce["clean"]
    density = (sums.fired / sums.n).float().cpu()
    n_dead = int((sums.fired == 0).sum())
    return SAEEval(
        site=read_site, n_tokens=sums.n, l0=sums.l0 / sums.n, mse=sums.sq_err / sums.n,
        fvu=sums.sq_err / total_var if total_var > 0 else math.nan, n_dead=n_dead, dead_fraction=n_dead / d_sae,
        n_outliers=sums.n_outliers,
        ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_zero_ablation=ce["zero"],
        ce_loss_recovered=(ce["zero"] - ce["spliced"]) / denom if denom != 0 else math.nan,
        kl_div=sums.kl / (toks.shape[0] * toks.shape[1]), density=density,
        site_out=write_site if write_site != read_site else None,
    )


def eval_tokens(model, tokens, context_length: int, max_sequences: int | None = None) -> Tensor:
    """Token rows ``[n_seq, pos]`` from ``tokens`` (a 2-D LongTensor is used as is; other sources go through
    ``load_tokens``), at most ``max_sequences``; an empty source is an error."""
    if tokens is None:
        raise ValueError("tokens: give the tokens to run on (a LongTensor [n_seq, pos], a list of texts, a .txt or "
                         ".safetensors path, or builtin:stdlib-docs)")
    if isinstance(tokens, (list, tuple)) and len(tokens) == 0:
        raise ValueError("tokens: the dataset is empty (an empty list of texts)")
    if isinstance(tokens, Tensor) and tokens.ndim == 2:
        toks = tokens
    else:
        toks = load_tokens(tokens, model.tokenizer, context_length)
    if toks.numel() == 0:
        raise ValueError(f"tokens: the dataset is empty (shape {tuple(toks.shape)})")
    toks = model.check_tokens(toks)
    if max_sequences is not None:
        if isinstance(max_sequences, bool) or not isinstance(max_sequences, int) or max_sequences < 1:
            raise ValueError(f"max_sequences must be an int >= 1 or None; got {max_sequences!r}")
        toks = toks[:max_sequences]
    return toks


def check_widths(sae, model, read_site: str, write_site: str, toks: Tensor) -> None:
    """Raise a ValueError naming the site when the SAE's ``d_in`` / ``d_out`` do not match the sites' widths."""
    from interp.saes.store import sites_activations

    widths = [a.shape[-1] for a in sites_activations(model, [read_site, write_site], toks[:1, :2])]
    d_in = sae.cfg.d_in
    d_out = sae.cfg.d_out if sae.cfg.d_out is not None else d_in
    if widths[0] != d_in:
        raise ValueError(f"d_in mismatch: the SAE has d_in={d_in} but site {read_site!r} has width {widths[0]}")
    if widths[1] != d_out:
        raise ValueError(f"d_out mismatch: the transcoder has d_out={d_out} but site {write_site!r} has width "
                         f"{widths[1]}")
