"""Held-out KL per layer of the tuned and the logit lens (Belrose et al. 2023, figure 2: ``KL(p_final || p_lens)``
in nats, averaged over tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.reports import Result, figure_html, table_html

__all__ = ["LensEval", "evaluate_lenses", "kl_to_final"]


def kl_to_final(final_logits: Tensor, lens_logits: Tensor) -> Tensor:
    """``KL(softmax(final) || softmax(lens))`` per token (nats), over the last axis."""
    p_log = final_logits.float().log_softmax(-1)
    return (p_log.exp() * (p_log - lens_logits.float().log_softmax(-1))).sum(-1)


def evaluate_lenses(model, tokens: Tensor, lens=None, *, batch_size: int = 8, progress: bool = True) -> LensEval:
    """Mean ``KL(final || lens)`` per layer on ``tokens [n_seq, ctx]`` for the logit lens and, if given, the tuned
    ``lens``; in batches of ``batch_size`` rows."""
    from tqdm.auto import tqdm

    from interp.checks import check_int
    from interp.lenses.tuned import resid_stack

    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.numel() == 0:
        raise ValueError(f"tokens must be ids [n_seq, ctx]; got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    batch_size = check_int(batch_size, "batch_size", lo=1)
    if lens is not None:
        lens.check_model(model)
    n = model.n_layers
    sums = {"logit": torch.zeros(n + 1, dtype=torch.float64), "tuned": torch.zeros(n + 1, dtype=torch.float64)}
    labels: list[str] = []
    w_u, b_u = model.W_U.detach(), model.b_U.detach()
    with torch.no_grad():
        for start in tqdm(range(0, tokens.shape[0], batch_size), desc="lens KL", disable=not progress, leave=False):
            rows = model.check_tokens(tokens[start:start + batch_size].to(model.device))
            stack, labels = resid_stack(model, rows, apply_ln=False)
            final = model.apply_ln_final(stack[-1]) @ w_u + b_u
            for layer in range(n + 1):
                h = stack[layer]
                sums["logit"][layer] += kl_to_final(final, model.apply_ln_final(h) @ w_u + b_u).sum().double().cpu()
                if lens is not None:
                    sums["tuned"][layer] += kl_to_final(final, lens.logits(model, h, layer)).sum().double().cpu()
    count = tokens.numel()
    return LensEval(labels=labels, logit_kl=(sums["logit"] / count).float(),
                    tuned_kl=(sums["tuned"] / count).float() if lens is not None else None, tokens=count)


@dataclass(frozen=True, eq=False)
class LensEval(Result):
    """Mean KL(final || lens) per layer on held-out tokens, for the logit lens and the tuned lens."""

    labels: list[str]
    """Layer labels (``"{l}_pre"`` ... ``"final_post"``)."""
    logit_kl: Tensor = field(repr=False)
    """``[layer]``: the logit lens's mean KL, nats."""
    tuned_kl: Tensor | None = field(repr=False)
    """``[layer]``: the tuned lens's mean KL, nats (None when no tuned lens was evaluated)."""
    tokens: int
    """Tokens averaged over."""

    title = "Tuned lens vs logit lens: held-out KL"

    def tuned_wins(self) -> list[bool]:
        """Per layer but the last (where both lenses are the model itself): tuned KL < logit KL."""
        if self.tuned_kl is None:
            raise ValueError("no tuned lens was evaluated (lens=None)")
        return (self.tuned_kl[:-1] < self.logit_kl[:-1]).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "logit_kl": self.logit_kl.tolist(),
                "tuned_kl": None if self.tuned_kl is None else self.tuned_kl.tolist(), "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LensEval:
        tuned = d.get("tuned_kl")
        return cls(labels=list(d["labels"]), logit_kl=torch.tensor(d["logit_kl"]),
                   tuned_kl=None if tuned is None else torch.tensor(tuned), tokens=int(d["tokens"]))

    def plot(self):
        """KL by layer (log scale), tuned vs logit lens (Belrose et al.'s figure 2)."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_trace(go.Scatter(x=self.labels, y=self.logit_kl.tolist(), mode="lines+markers", name="logit lens"))
        if self.tuned_kl is not None:
            fig.add_trace(go.Scatter(x=self.labels, y=self.tuned_kl.tolist(), mode="lines+markers", name="tuned lens"))
        fig.update_yaxes(type="log", title_text="KL(final || lens), nats")
        fig.update_layout(title=f"held-out KL per layer ({self.tokens} tokens)", xaxis_title="layer", height=450)
        return fig

    def _html_sections(self) -> list:
        tuned = self.tuned_kl.tolist() if self.tuned_kl is not None else [float("nan")] * len(self.labels)
        rows = list(zip(self.labels, self.logit_kl.tolist(), tuned))
        return [("Figure", figure_html(self.plot())),
                ("KL by layer (nats)", table_html(rows, ["layer", "logit lens", "tuned lens"]))]
