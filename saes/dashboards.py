"""``inspect(sae, model, dataset) -> FeatureDashboards``: what each latent of an SAE responds to and what it does.

For every latent (Bricken et al. 2023, "Towards Monosemanticity", feature visualisations; the layout of SAELens's
sae_dashboard and Neuronpedia):

- the top-activating contexts: the ``n_examples`` sequences where the latent reaches its highest activations (one
  example per sequence, centred on the maximal token), with each token's activation for highlighting;
- an activation histogram (over every token it fires on), its density (fraction of tokens it fires on), its mean
  and maximal activation;
- the logit lens of its decoder direction (Bricken et al. 2023; nostalgebraist 2020): ``d = W_dec[j]`` through the
  final norm and the unembedding, ``(ln_final(d) - ln_final(0)) @ W_U``, whose largest and smallest entries are the
  tokens the latent promotes and suppresses (only where the decoder writes a ``d_model``-wide activation).

Dead latents (never fired) and ultra-dense ones (density above ``dense_threshold``) are listed apart.

One pass over the corpus, batch by batch: the forward pass stops after the site; the SAE's encoder runs densely
(the one dense product) and its output is kept sparse, ``(values, latents)`` per token, from which every statistic
is accumulated. Per latent, memory is bounded: a heap of ``n_examples`` entries and a ``n_bins`` histogram whose range
doubles when a larger activation arrives (merging bin pairs, so counts stay exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.reports import Result
from interp.saes.metadata import resolve_sites

__all__ = ["FeatureDashboards", "LatentDashboard", "inspect", "sparse_latents"]


def sparse_latents(sae, x: Tensor) -> tuple[Tensor, Tensor]:
    """The SAE's latents for rows ``x [n, d_in]`` as ``(values [n, K], latents [n, K])``: TopK SAEs keep each row's
    top k (ReLU applied), the others their non-zero latents (padding: value 0 at latent 0)."""
    with torch.no_grad():
        pre = sae.pre_acts(x.to(sae.W_enc.dtype))
        if sae.cfg.architecture in ("topk", "topk_transcoder"):
            vals, idx = pre.topk(sae.cfg.k, dim=-1, sorted=False)
            return vals.relu_(), idx
        dense = sae.activation(pre)
        del pre
        width = max(int((dense != 0).sum(-1).max()) if dense.numel() else 0, 1)
        vals, idx = dense.topk(width, dim=-1, sorted=False)
        return vals, idx


class _Histograms:
    """Exact per-latent linear histograms over ``[0, range_j]``; ``range_j`` (a power of two) doubles as needed."""

    def __init__(self, d_sae: int, n_bins: int, device) -> None:
        if n_bins < 2 or n_bins & (n_bins - 1):
            raise ValueError(f"n_bins must be a power of two >= 2; got {n_bins}")
        self.n_bins = n_bins
        self.range = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.counts = torch.zeros(d_sae, n_bins, dtype=torch.long, device=device)

    def add(self, lat: Tensor, val: Tensor) -> None:
        val = val.double()
        bmax = torch.zeros_like(self.range).scatter_reduce(0, lat, val, "amax")
        grow = bmax > self.range
        if grow.any():
            new = torch.exp2(torch.ceil(torch.log2(bmax[grow])))
            old = self.range[grow]
            rows = grow.nonzero()[:, 0]
            factor = torch.where(old > 0, torch.round(new / old.clamp_min(1e-300)), torch.ones_like(new)).long()
            for f in factor.unique().tolist():
                if f <= 1:
                    continue
                r = rows[factor == f]
                c = self.counts[r]
                merged = c.sum(-1, keepdim=True) if f >= self.n_bins else c.view(len(r), -1, f).sum(-1)
                self.counts[r] = torch.cat([merged, c.new_zeros(len(r), self.n_bins - merged.shape[1])], 1)
            self.range[rows] = new
        b = (val / self.range[lat] * self.n_bins).long().clamp_(0, self.n_bins - 1)
        self.counts.view(-1).index_add_(0, lat * self.n_bins + b, torch.ones_like(b))


class _Heaps:
    """For each selected latent, the ``n`` best (activation, sequence, position) with one entry per sequence, and
    the latent's activations over a window of tokens around the position."""

    def __init__(self, slots: int, n: int, left: int, right: int, device) -> None:
        self.n, self.left, self.right = n, left, right
        kw = dict(device=device)
        self.val = torch.full((slots, n), -math.inf, dtype=torch.float64, **kw)
        self.seq = torch.full((slots, n), -1, dtype=torch.long, **kw)
        self.pos = torch.full((slots, n), -1, dtype=torch.long, **kw)
        self.win = torch.zeros(slots, n, left + right + 1, dtype=torch.float32, **kw)

    def add(self, slot: Tensor, lat: Tensor, val: Tensor, row: Tensor, T: int, seq0: int, vals: Tensor,
            idx: Tensor) -> None:
        """Candidates ``(slot, latent, value, row)`` of one batch (rows ``b * T + pos``, sequences from ``seq0``);
        ``vals, idx`` the batch's sparse latents, to read the window activations of the entries that are kept."""
        n_slots = self.val.shape[0]
        if slot.numel() == 0 or n_slots == 0:
            return
        local_seq = torch.div(row, T, rounding_mode="floor")
        n_seq = int(local_seq.max()) + 1 if row.numel() else 1
        order = torch.argsort(val, descending=True, stable=True)
        order = order[torch.argsort((slot * n_seq + local_seq)[order], stable=True)]
        key = (slot * n_seq + local_seq)[order]
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        best = order[first]  # each (latent, sequence)'s maximal activation in this batch
        c_slot, c_val, c_row = slot[best], val[best].double(), row[best]
        old_slot = torch.arange(n_slots, device=slot.device).repeat_interleave(self.n)
        all_slot = torch.cat([old_slot, c_slot])
        all_val = torch.cat([self.val.reshape(-1), c_val])
        src = torch.cat([torch.full_like(old_slot, -1), torch.arange(len(best), device=slot.device)])
        order = torch.argsort(all_val, descending=True, stable=True)
        order = order[torch.argsort(all_slot[order], stable=True)]
        s_sorted = all_slot[order]
        starts = torch.searchsorted(s_sorted, torch.arange(n_slots, device=slot.device))
        rank = torch.arange(len(order), device=slot.device) - starts[s_sorted]
        kept = order[rank < self.n]  # exactly n per slot, best first (old entries include -inf fillers)
        k_slot, k_rank = all_slot[kept], rank[rank < self.n]
        new_val = all_val[kept].view(n_slots, self.n)
        k_src = src[kept]
        old_flat = torch.where(k_src < 0, kept, torch.zeros_like(kept))
        seq = torch.where(k_src < 0, self.seq.reshape(-1)[old_flat], -1)
        pos = torch.where(k_src < 0, self.pos.reshape(-1)[old_flat], -1)
        win = self.win.reshape(-1, self.win.shape[-1])[old_flat].clone()
        fresh = (k_src >= 0).nonzero()[:, 0]
        if fresh.numel():
            c = k_src[fresh]
            r = c_row[c]
            seq[fresh] = torch.div(r, T, rounding_mode="floor") + seq0
            pos[fresh] = r % T
            win[fresh] = self._windows(r, lat[best][c], T, vals, idx)
        del k_slot, k_rank
        self.val, self.seq = new_val, seq.view(n_slots, self.n)
        self.pos, self.win = pos.view(n_slots, self.n), win.view(n_slots, self.n, -1)

    def _windows(self, row: Tensor, latent: Tensor, T: int, vals: Tensor, idx: Tensor) -> Tensor:
        offsets = torch.arange(-self.left, self.right + 1, device=row.device)
        pos = (row % T)[:, None] + offsets
        rows = row[:, None] + offsets
        ok = (pos >= 0) & (pos < T)
        rows = torch.where(ok, rows, row[:, None])
        hit = idx[rows] == latent[:, None, None]
        acts = (vals[rows] * hit).sum(-1)
        return torch.where(ok, acts, torch.zeros_like(acts)).float()


@dataclass(frozen=True)
class LatentDashboard(Result):
    """One latent's dashboard (see the module docstring)."""

    latent: int
    """Latent index."""
    density: float
    """Fraction of the inspected tokens it fires on."""
    n_fired: int
    """Tokens it fires on."""
    max_activation: float
    """Largest activation seen (0 if dead)."""
    mean_activation: float
    """Mean activation over the tokens it fires on (0 if dead)."""
    examples: list = field(repr=False)
    """Top contexts, best first: dicts with ``activation``, ``sequence``, ``position``, ``tokens`` (strings),
    ``token_ids``, ``acts`` (the latent's activation on each token shown) and ``center`` (index of the maximal one)."""
    hist_edges: list = field(repr=False)
    """Activation histogram bin edges (``n_bins + 1``, from 0)."""
    hist_counts: list = field(repr=False)
    """Tokens per histogram bin."""
    promoted: list = field(repr=False)
    """``(token, logit effect)`` pairs the decoder direction raises most (empty without a logit lens)."""
    suppressed: list = field(repr=False)
    """``(token, logit effect)`` pairs it lowers most."""

    @property
    def title(self) -> str:
        return f"Latent {self.latent}"

    def to_dict(self) -> dict[str, Any]:
        return {"latent": self.latent, "density": self.density, "n_fired": self.n_fired,
                "max_activation": self.max_activation, "mean_activation": self.mean_activation,
                "examples": self.examples, "hist_edges": self.hist_edges, "hist_counts": self.hist_counts,
                "promoted": [list(p) for p in self.promoted], "suppressed": [list(p) for p in self.suppressed]}

    def plot(self):
        """Plotly bar chart of the activation histogram."""
        import plotly.graph_objects as go

        e = self.hist_edges
        centers = [(a + b) / 2 for a, b in zip(e[:-1], e[1:])]
        width = (e[1] - e[0]) if len(e) > 1 else 1.0
        fig = go.Figure(go.Bar(x=centers, y=self.hist_counts, width=width, marker_color="#d2691e"))
        fig.update_layout(title=f"Latent {self.latent}: activations (density {self.density:.3g})",
                          xaxis_title="activation", yaxis_title="tokens", bargap=0.02, height=280,
                          margin=dict(l=50, r=20, t=40, b=40))
        return fig

    def _html_sections(self) -> list:
        from interp.saes.dashboard_html import latent_card

        return [latent_card(self, plotly=True)]

    def _repr_html_(self) -> str:
        from interp.reports.html import notebook_figure
        from interp.saes.dashboard_html import STYLE, latent_card

        return f"<style>{STYLE}</style>" + latent_card(self, figure=notebook_figure(self.plot()))


@dataclass(frozen=True)
class FeatureDashboards(Result):
    """Dashboards of an SAE's latents on a corpus (``saes.inspect``)."""

    title = "SAE feature dashboards"

    site: str
    """Site the SAE reads."""
    site_out: str | None
    """Transcoders: the site its decoder writes; None for an SAE."""
    model_name: str | None
    """Model spec recorded in the SAE (or None)."""
    n_tokens: int
    """Tokens inspected (special positions left out)."""
    n_sequences: int
    """Sequences streamed."""
    dense_threshold: float
    """Density above which a latent counts as ultra-dense."""
    density: Tensor = field(repr=False)
    """Firing frequency of every latent ``[d_sae]``."""
    dead: list = field(repr=False)
    """Latents that never fired."""
    dense: list = field(repr=False)
    """Latents with density above ``dense_threshold``, densest first."""
    latents: dict = field(repr=False)
    """``{latent: LatentDashboard}`` for the inspected latents."""

    def __getitem__(self, latent: int) -> LatentDashboard:
        if latent not in self.latents:
            raise KeyError(f"latent {latent} was not inspected; inspected: {len(self.latents)} latents "
                           f"({min(self.latents, default=None)}..{max(self.latents, default=None)})")
        return self.latents[latent]

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "site_out": self.site_out, "model_name": self.model_name,
                "n_tokens": self.n_tokens, "n_sequences": self.n_sequences, "d_sae": int(self.density.numel()),
                "dense_threshold": self.dense_threshold, "density": self.density, "dead": self.dead,
                "dense": self.dense, "latents": [d.to_dict() for d in self.latents.values()]}

    def plot(self):
        """Plotly histogram of log10 latent density over all latents (dead ones counted in the title)."""
        import plotly.graph_objects as go

        alive = self.density[self.density > 0].double()
        fig = go.Figure(go.Histogram(x=torch.log10(alive).tolist(), nbinsx=50, marker_color="#4a6fa5"))
        fig.update_layout(title=f"Latent density ({len(self.dead)} dead, {len(self.dense)} above "
                                f"{self.dense_threshold:g}, of {self.density.numel()})",
                          xaxis_title="log10(firing frequency)", yaxis_title="latents", bargap=0.02, height=320)
        return fig

    def _html_sections(self, max_cards: int | None = None) -> list:
        from interp.saes.dashboard_html import page_sections

        return page_sections(self, max_cards)

    def save_html(self, path, *, max_cards: int | None = 2000):
        """One self-contained HTML page (plotly inline, no CDN): summary, dead and dense lists, an index and one card
        per inspected latent (at most ``max_cards``, in index order; the JSON keeps them all)."""
        from interp.reports.html import page, save_html

        where = self.site if self.site_out is None else f"{self.site} -> {self.site_out}"
        sub = f"{self.model_name or 'model'} at {where}; {self.n_tokens} tokens from {self.n_sequences} sequences"
        return save_html(path, page(self.title, self._html_sections(max_cards), subtitle=sub))

    def _repr_html_(self) -> str:
        from interp.reports.html import notebook_figure
        from interp.saes.dashboard_html import summary_html

        return summary_html(self) + notebook_figure(self.plot())


def inspect(sae, model, dataset, latents=None, *, n_examples: int = 20, site=None, allow_site_mismatch: bool = False,
            context_length: int = 128, batch_size: int = 8, max_sequences: int | None = None,
            skip_special: bool = True, window: tuple[int, int] = (12, 4), n_bins: int = 32, n_logits: int = 10,
            dense_threshold: float = 0.1, progress: bool = True) -> FeatureDashboards:
    """Feature dashboards of ``sae`` on ``dataset`` (module docstring); one pass over the corpus.

    ``dataset``: a LongTensor ``[n_seq, pos]`` or any source ``load_tokens`` takes (cut into ``context_length``
    contexts, at most ``max_sequences``); ``batch_size`` sequences per forward. ``latents``: indices to build
    dashboards for (None: all; density, dead and dense lists always cover all). ``site`` None: the recorded site
    (another one needs ``allow_site_mismatch``). ``window``: tokens shown before and after the maximal one.
    """
    from tqdm.auto import tqdm

    from interp.saes.metrics import check_widths, eval_tokens
    from interp.saes.store import _special_ids, site_activations

    read_site, write_site = resolve_sites(sae, site, allow_site_mismatch=allow_site_mismatch)
    read_site, write_site = model.check_site(read_site), model.check_site(write_site)
    d_sae = sae.cfg.d_sae
    selected = _check_latents(latents, d_sae)
    for name, value, lo in (("n_examples", n_examples, 1), ("n_logits", n_logits, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {value!r}")
    if not (isinstance(window, (tuple, list)) and len(window) == 2 and all(isinstance(w, int) and w >= 0
                                                                          for w in window)):
        raise ValueError(f"window must be (tokens before, tokens after), two ints >= 0; got {window!r}")
    if not (isinstance(dense_threshold, (int, float)) and 0 < dense_threshold <= 1):
        raise ValueError(f"dense_threshold must be a fraction in (0, 1]; got {dense_threshold!r}")
    toks = eval_tokens(model, dataset, context_length, max_sequences)
    check_widths(sae, model, read_site, write_site, toks)
    device = sae.W_enc.device
    special = torch.tensor(_special_ids(model) if skip_special else [], dtype=torch.long)
    slot_of = torch.full((d_sae,), -1, dtype=torch.long, device=device)
    slot_of[selected.to(device)] = torch.arange(len(selected), device=device)
    fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    act_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
    hists = _Histograms(d_sae, n_bins, device)
    heaps = _Heaps(len(selected), n_examples, window[0], window[1], device)
    n_tokens, T = 0, toks.shape[1]
    for start in tqdm(range(0, toks.shape[0], batch_size), desc="inspect SAE", disable=not progress):
        batch = toks[start: start + batch_size]
        x = site_activations(model, read_site, batch).reshape(-1, sae.cfg.d_in)
        keep = ~torch.isin(batch, special.to(batch.device)).reshape(-1).to(device)
        vals, idx = sparse_latents(sae, x.to(device))
        vals = vals * keep[:, None]
        n_tokens += int(keep.sum())
        active = vals > 0
        row = active.nonzero()[:, 0]
        lat, val = idx[active], vals[active]
        fired += torch.bincount(lat, minlength=d_sae)
        act_sum.index_add_(0, lat, val.double())
        hists.add(lat, val)
        slot = slot_of[lat]
        mine = slot >= 0
        heaps.add(slot[mine], lat[mine], val[mine], row[mine], T, start, vals, idx)
    if n_tokens == 0:
        raise ValueError("no tokens left to inspect after dropping special positions")
    density = (fired.double() / n_tokens).float().cpu()
    lens = _logit_lens(sae, model, selected, n_logits)
    examples = _examples(model, toks, heaps, window)
    sel = selected.to(device)
    edges = (hists.range[sel, None] * torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=device)).tolist()
    counts, fired_l, sums_l = hists.counts[sel].tolist(), fired.tolist(), act_sum.tolist()
    density_l, top = density.tolist(), heaps.val[:, 0].tolist() if n_examples else []
    cards = {}
    for s, j in enumerate(selected.tolist()):
        cards[j] = LatentDashboard(
            latent=j, density=density_l[j], n_fired=fired_l[j],
            max_activation=top[s] if fired_l[j] else 0.0,
            mean_activation=sums_l[j] / fired_l[j] if fired_l[j] else 0.0,
            examples=examples[s], hist_edges=edges[s], hist_counts=counts[s],
            promoted=lens[s][0] if lens else [], suppressed=lens[s][1] if lens else [])
    dead = (fired == 0).nonzero()[:, 0].tolist()
    dense_idx = (density > dense_threshold).nonzero()[:, 0]
    dense = dense_idx[torch.argsort(density[dense_idx], descending=True)].tolist()
    meta = getattr(sae, "metadata", None)
    return FeatureDashboards(site=read_site, site_out=write_site if write_site != read_site else None,
                             model_name=meta.model_name if meta is not None else None, n_tokens=n_tokens,
                             n_sequences=int(toks.shape[0]), dense_threshold=float(dense_threshold),
                             density=density, dead=dead, dense=dense, latents=cards)


def _check_latents(latents, d_sae: int) -> Tensor:
    if latents is None:
        return torch.arange(d_sae)
    if isinstance(latents, int) and not isinstance(latents, bool):
        latents = [latents]
    if isinstance(latents, Tensor):
        latents = latents.flatten().tolist()
    if isinstance(latents, range):
        latents = list(latents)
    if not isinstance(latents, (list, tuple)) or not latents:
        raise ValueError(f"latents must be None, a latent index or a non-empty list of them; got {latents!r}")
    bad = [j for j in latents if isinstance(j, bool) or not isinstance(j, int)]
    if bad:
        raise TypeError(f"latents must be ints; got {bad[:5]}")
    out = [j for j in latents if not 0 <= j < d_sae]
    if out:
        raise IndexError(f"latent index {out[0]} is out of range: this SAE has {d_sae} latents (0..{d_sae - 1})")
    return torch.tensor(sorted(set(latents)), dtype=torch.long)


def _token_strings(model, ids) -> dict[int, str]:
    """Each token id's text (one batched decode)."""
    ids = sorted({int(i) for i in ids})
    if getattr(model, "tokenizer", None) is None:
        return {i: f"<{i}>" for i in ids}
    return dict(zip(ids, model.tokenizer.batch_decode([[i] for i in ids])))


def _examples(model, toks: Tensor, heaps: _Heaps, window: tuple[int, int]) -> list[list[dict]]:
    """Per heap slot, its kept examples (best first) with their tokens and the latent's activation on each."""
    T, left = toks.shape[1], window[0]
    vals, seqs, poss = heaps.val.tolist(), heaps.seq.tolist(), heaps.pos.tolist()
    wins = heaps.win.tolist()
    spans = {}
    for slot_seqs, slot_pos, slot_vals in zip(seqs, poss, vals):
        for seq, pos, value in zip(slot_seqs, slot_pos, slot_vals):
            if math.isfinite(value):
                spans[(seq, pos)] = (max(0, pos - left), min(T, pos + window[1] + 1))
    rows = toks.tolist()
    names = _token_strings(model, [t for (seq, _), (lo, hi) in spans.items() for t in rows[seq][lo:hi]])
    out = []
    for slot in range(len(vals)):
        kept = []
        for value, seq, pos, win in zip(vals[slot], seqs[slot], poss[slot], wins[slot]):
            if not math.isfinite(value):
                break
            lo, hi = spans[(seq, pos)]
            ids = rows[seq][lo:hi]
            kept.append({"activation": value, "sequence": seq, "position": pos, "tokens": [names[i] for i in ids],
                         "token_ids": ids, "acts": win[lo - (pos - left): hi - (pos - left)], "center": pos - lo})
        out.append(kept)
    return out


def _logit_lens(sae, model, selected: Tensor, n: int) -> list | None:
    """Per selected latent ``(promoted, suppressed)`` token lists, or None when the decoder does not write a
    ``d_model``-wide activation or ``n`` is 0."""
    d_out = sae.cfg.d_out if sae.cfg.d_out is not None else sae.cfg.d_in
    if n == 0 or d_out != model.d_model:
        return None
    W_U = model.W_U.detach()
    out = []
    with torch.no_grad():
        for chunk in selected.split(256):
            dirs = sae.W_dec.detach()[chunk.to(sae.W_dec.device)].to(W_U.device, W_U.dtype)
            shift = model.apply_ln_final(torch.zeros_like(dirs[:1]))
            effect = (model.apply_ln_final(dirs) - shift) @ W_U
            k = min(n, effect.shape[-1])
            top, bottom = effect.topk(k, dim=-1), (-effect).topk(k, dim=-1)
            ids = sorted(set(top.indices.flatten().tolist()) | set(bottom.indices.flatten().tolist()))
            names = _token_strings(model, ids)
            tv, ti, bv, bi = (t.tolist() for t in (top.values, top.indices, bottom.values, bottom.indices))
            for r in range(len(chunk)):
                out.append(([(names[i], v) for v, i in zip(tv[r], ti[r])],
                            [(names[i], -v) for v, i in zip(bv[r], bi[r])]))
    return out
