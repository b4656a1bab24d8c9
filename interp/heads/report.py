"""``HeadReport``: what ``interp.heads.detect`` found: scores per kind, causal validation, details, protocol.

``to_dict()`` (and so ``to_json()`` / ``save_json``) has exactly the layout of the ``interp heads --json`` file:
``{"model", "n_layers", "n_heads", "scores": {kind: [[float] * n_heads] * n_layers}, "validation": {kind: {...}}}``;
each ``validation[kind]`` holds the ablation comparison (:meth:`Validation.to_dict`), the top heads (``"top"``:
``[layer, head, score]``), the detector's own extras (``"detector"``: copying score, n-gram orders, kept and dropped
successor tasks, retrieval trials), the protocol in words and, for a kind that could not run, ``"skipped"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from interp.heads.config import HeadsConfig
from interp.heads.validation import Validation
from interp.reports import Result, to_jsonable

__all__ = ["HeadReport", "Head", "top_heads", "protocol"]


class Head(NamedTuple):
    """One head and its score."""

    layer: int
    head: int
    score: float


def top_heads(scores: Tensor, k: int | None = None) -> list[Head]:
    """The ``k`` highest-scoring heads of ``scores [n_layers, n_heads]`` (all when None), best first; NaN scores are
    left out; ties keep (layer, head) order."""
    flat = scores.flatten().float()
    order = torch.sort(flat.nan_to_num(float("-inf")), descending=True, stable=True).indices
    n_heads = scores.shape[1]
    out = [Head(int(i) // n_heads, int(i) % n_heads, float(flat[i])) for i in order if not torch.isnan(flat[i])]
    return out if k is None else out[:k]


def protocol(kind: str, cfg: HeadsConfig) -> str:
    """How ``kind`` was measured and validated under ``cfg``, in words (with the papers)."""
    rep = (f"{cfg.repeat_batch} rows of {cfg.repeat_half} distinct random tokens repeated once (BOS first when the "
           "tokenizer has one)")
    val_rep = (f"Validation: mean next-token loss on the repeated half of {cfg.validation_batch} fresh rows "
               f"(seed + 1), clean vs the top-{cfg.top_k} heads {cfg.ablation}-ablated vs {cfg.draws} draws of "
               f"{cfg.top_k} random other heads.")
    text = {
        "previous_token": f"Mean attention from each position to the previous one (Olsson et al. 2022) on {rep}. "
                          f"{val_rep} Previous-token heads feed induction (K-composition), whose predictions on the "
                          "repeated half need the previous token.",
        "duplicate_token": f"Mean attention from each repeated token to its earlier occurrence (Wang et al. 2022) on "
                           f"{rep}. {val_rep} The repeated half holds the positions whose token occurred earlier.",
        "induction": f"Prefix matching: mean attention from each second-half token to the token after its first "
                     f"occurrence (Olsson et al. 2022) on {rep}. Copying (reported separately): direct logit effect "
                     "of the head's output on that attended token, through the final norm, relative to the other "
                     f"tokens of the row. {val_rep}",
        "ngram": f"{cfg.ngram_batch} rows of {cfg.ngram_length} tokens from random order-2 Markov chains over "
                 f"{cfg.ngram_symbols} symbols, preferred successor taken with probability {cfg.ngram_stickiness} "
                 "(Akyürek et al. 2024). S_k = attention mass on order-k matches "
                 "(the previous k tokens match), over rows with such a match; the kind's score is S_2; best k = the "
                 "highest order whose lift over an ideal order-(k-1) head is within 90% of the head's best lift. "
                 "Validation: next-token loss at positions with an order-2 "
                 f"match on {cfg.validation_batch} fresh rows, top-{cfg.top_k} vs {cfg.draws} random draws "
                 f"({cfg.ablation} ablation).",
        "successor": "Succession score (Gould et al. 2023): ln_final(ln1(MLP0(W_E[t_i])) W_V W_O) W_U restricted to a "
                     "task's tokens ranks t_{i+1} first, fraction of pairs, mean over the single-token tasks (numbers, "
                     "number words, ordinals, days, months and their abbreviations, letters). Validation: accuracy of "
                     f"the next item after {cfg.successor_window} consecutive comma-separated items of every kept "
                     f"task ({_successor_runs(cfg)}), top-{cfg.top_k} vs {cfg.draws} random draws "
                     f"({cfg.ablation} ablation).",
        "retrieval": f"Needle in a haystack (Wu et al. 2024) at lengths {list(cfg.retrieval_lengths)} x depths "
                     f"{list(cfg.retrieval_depths)} ({cfg.retrieval_mode} haystack), greedy decoding; a head "
                     "copy-pastes a step when its most attended key lies in the needle and holds the generated "
                     "token; score = copied answer tokens / answer length, averaged over trials with ROUGE-1 recall "
                     "> 0.5. Attention rows come from one teacher-forced forward per trial. Validation: teacher-"
                     f"forced greedy accuracy on the answer in the {cfg.retrieval_validation_trials} shortest "
                     f"reproduced trials, top-{cfg.top_k} vs {cfg.draws} random draws ({cfg.ablation} ablation).",
    }
    return text[kind]


@dataclass(frozen=True)
class HeadReport(Result):
    """The result of :func:`interp.heads.detect`."""

    model: str
    """The model's name."""
    n_layers: int
    n_heads: int
    scores: dict[str, Tensor]
    """Kind -> ``[n_layers, n_heads]`` score (kinds that ran)."""
    validation: dict[str, Validation]
    """Kind -> causal validation of its top heads (:class:`~interp.heads.validation.Validation`)."""
    details: dict[str, dict[str, Any]]
    """Kind -> the detector's extras (e.g. ``details["induction"]["copying_score"]``, ``details["ngram"]["S3"]``,
    ``["best_k"]``, ``details["successor"]["dropped_tasks"]``, ``details["retrieval"]["trials"]``)."""
    skipped: dict[str, str]
    """Kind -> why it could not be scored on this model."""
    config: HeadsConfig
    passes: dict[str, dict[str, float]] = field(default_factory=dict)
    """Stage -> forward passes, tokens and seconds."""
    seconds: float = 0.0
    """Wall time of the whole run."""
    head_axis: str = "head"
    """What a head is on this model (``"head"``, or ``"channel group"`` for Mamba-1)."""
    title = "Head discovery"

    def top(self, kind: str, k: int | None = None) -> list[Head]:
        """The ``k`` best heads of ``kind`` (default: the run's ``top_k``), best first."""
        if kind not in self.scores:
            why = f"it was skipped: {self.skipped[kind]}" if kind in self.skipped else \
                f"scored kinds: {', '.join(self.scores)}"
            raise KeyError(f"no scores for kind {kind!r}; {why}")
        return top_heads(self.scores[kind], self.config.top_k if k is None else k)

    def finding(self, kind: str) -> str:
        """What ``kind``'s detector found, in words, negatives included (:mod:`interp.heads.findings`); the causal
        side is ``validation[kind].verdict``."""
        from interp.heads.findings import finding

        return finding(self, kind)

    def to_dict(self) -> dict[str, Any]:
        validation: dict[str, Any] = {}
        for kind in self.config.kinds:
            entry: dict[str, Any] = {}
            if kind in self.skipped:
                entry["skipped"] = self.skipped[kind]
            if kind in self.validation:
                entry.update(self.validation[kind].to_dict())
            if kind in self.scores:
                entry["top"] = [[h.layer, h.head, h.score] for h in self.top(kind)]
            if kind in self.scores or kind in self.skipped:
                entry["finding"] = self.finding(kind)
            entry["detector"] = to_jsonable(self.details.get(kind, {}))
            entry["protocol"] = protocol(kind, self.config)
            validation[kind] = entry
        return {"model": self.model, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "scores": {k: to_jsonable(v) for k, v in self.scores.items()}, "validation": validation,
                "config": {f.name: to_jsonable(getattr(self.config, f.name)) for f in fields(self.config)
                           if f.name != "derived"},
                "derived_defaults": {name: {"value": to_jsonable(getattr(self.config, name)), "why": why}
                                     for name, why in self.config.derived}}

    def heatmap(self, kind: str, values: Tensor | None = None, title: str | None = None):
        """A plotly heatmap (layer x head) of ``kind``'s scores (or of ``values``)."""
        import plotly.graph_objects as go

        from interp.plotting import color_range

        data = (self.scores[kind] if values is None else values).float().cpu()
        fig = go.Figure(go.Heatmap(
            z=data.numpy(), x=list(range(self.n_heads)), y=list(range(self.n_layers)),
            **color_range(data.nan_to_num(0)),
            hovertemplate=f"layer %{{y}} {self.head_axis} %{{x}}<br>score=%{{z:.3f}}<extra></extra>"))
        fig.update_layout(title=title or kind, xaxis_title=self.head_axis, yaxis_title="layer",
                          yaxis_autorange="reversed", xaxis_dtick=1, yaxis_dtick=1 if self.n_layers <= 32 else None,
                          width=min(900, 260 + 40 * self.n_heads),
                          height=min(900, 200 + 22 * self.n_layers))
        return fig

    def plot(self):
        """One heatmap per scored kind (layer x head), side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        kinds = list(self.scores)
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, horizontal_spacing=0.04)
        for i, kind in enumerate(kinds):
            data = self.scores[kind].float().cpu()
            fig.add_trace(go.Heatmap(z=data.numpy(), coloraxis=None, showscale=False, colorscale="Blues",
                                     hovertemplate=f"{kind}<br>layer %{{y}} {self.head_axis} %{{x}}<br>%{{z:.3f}}"
                                                   "<extra></extra>"), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", title_text="layer", col=1)
        fig.update_layout(height=min(900, 240 + 18 * self.n_layers), width=max(500, 230 * len(kinds)),
                          title=f"{self.model}: head scores (layer x {self.head_axis})")
        return fig

    def _html_sections(self) -> list:
        from interp.heads.report_html import sections

        return sections(self)

    def _repr_html_(self) -> str:
        from interp.heads.report_html import summary_table
        from interp.reports.html import notebook_figure

        return summary_table(self) + notebook_figure(self.plot())

    def save_html(self, path):
        """One self-contained HTML page (plotly inline, opens offline): summary, heatmaps, details, protocol."""
        from interp.reports.html import page, save_html

        subtitle = (f"{self.model}: {self.n_layers} layers x {self.n_heads} {self.head_axis}s; top-{self.config.top_k}"
                    f" heads per kind; {self.config.ablation} ablation vs {self.config.draws} random draws; seed "
                    f"{self.config.seed}; {self.seconds:.1f} s")
        if self.config.derived:
            subtitle += "; defaults fitted to the model: " + "; ".join(
                f"{name}={getattr(self.config, name)!r} ({why})" for name, why in self.config.derived)
        return save_html(path, page(f"Head discovery: {self.model}", self._html_sections(), subtitle=subtitle))


def _successor_runs(cfg) -> str:
    n = cfg.successor_prompts
    return "every run" if not n else f"at most {n} evenly spaced runs per task"
