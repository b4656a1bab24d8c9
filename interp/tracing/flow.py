"""Information flow to the last position (Geva et al. 2023, "Dissecting Recall of Factual Associations in
Auto-Regressive Language Models", section 5, Figure 2).

For each layer l, the edges into the last position are knocked out (:func:`interp.tracing.knockout`) in a window
of ``window`` layers around l (``max(0, l - window // 2) .. min(n_layers, l - (-window // 2)) - 1``), from three
sets of sources: the subject's tokens, the other non-last tokens, and the last token itself. The curve is the
relative change of the probability of the answer, ``(P_knocked - P) / P`` in percent. Geva et al. find the
subject -> last flow matters in the upper-middle layers and the non-subject -> last flow earlier. All
``3 x n_layers`` knockouts run as the rows of one batched forward pass (each row its own edges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.reports import Result, figure_html, table_html
from interp.tracing.knockout import knockout_hooks
from interp.tracing.subject import prompt_tokens, subject_span
from interp.tracing.trace import window_layers

__all__ = ["information_flow", "FlowResult", "EDGES"]

EDGES = ("subject", "non-subject", "last")
"""Source sets whose edges into the last position are knocked out."""


@dataclass(frozen=True, eq=False)
class FlowResult(Result):
    """Relative change (%) of P(target) per source set and layer when its edges into the last position are knocked
    out in a window of layers (Geva et al. 2023)."""

    prompt: str
    str_tokens: list[str]
    subject_span: tuple[int, int]
    target: str
    target_id: int
    window: int
    p_clean: float
    """P(target) without knockout."""
    change: Tensor = field(repr=False)
    """``[3, layer]``: relative change in percent, rows in :data:`EDGES` order."""
    mode: str
    """``"attention"`` (transformers) or the Mamba knockout mode."""

    title = "Information flow to the last position"

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "str_tokens": self.str_tokens, "subject_span": list(self.subject_span),
                "target": self.target, "target_id": self.target_id, "window": self.window, "p_clean": self.p_clean,
                "edges": list(EDGES), "change_percent": self.change, "mode": self.mode}

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        for name, row in zip(EDGES, self.change):
            fig.add_trace(go.Scatter(x=list(range(row.numel())), y=row.tolist(), mode="lines+markers",
                                     name=f"{name} -> last"))
        fig.update_layout(title=f"Knocking out edges into the last position ({self.window}-layer windows, "
                                f"{self.mode}): P({self.target!r}) = {self.p_clean:.3f} without",
                          xaxis_title="center of the knocked-out window (layer)",
                          yaxis_title="% change in P(target)")
        return fig

    def _html_sections(self) -> list:
        rows = [(e, f"{float(r.min()):.1f}% at layer {int(r.argmin())}") for e, r in zip(EDGES, self.change)]
        return [("Largest drop per source set", table_html(rows, ["sources", "largest drop"])),
                ("Curves", figure_html(self.plot()))]


def information_flow(model, prompt, subject, target=None, *, window: int = 9, mamba_mode: str = "ssm") -> FlowResult:
    """Geva et al. 2023's attention-knockout curves for one factual prompt (see the module docstring).

    ``subject``: text or a ``(start, stop)`` token span; ``target``: default the model's top prediction;
    ``window``: layers knocked out together (Geva et al. use 9 for GPT-2 XL's 48 layers).
    """
    model = as_hooked(model, "information_flow")
    tokens = prompt_tokens(model, prompt)
    T, L = tokens.shape[1], model.n_layers
    start, stop = subject_span(model, tokens, subject)
    if stop >= T:
        raise ValueError("the subject must end before the last token (the flow measured is into the last position)")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1; got {window!r}")
    with torch.no_grad():
        probs = model(tokens)[0, -1].float().softmax(-1)
    target_id = int(probs.argmax()) if target is None else (
        model.to_single_token(target) if isinstance(target, str) else int(target))
    sets = torch.zeros(3, T, dtype=torch.bool)
    sets[0, start:stop] = True
    sets[1, :T - 1] = True
    sets[1, start:stop] = False
    sets[2, T - 1] = True
    rows = 3 * L
    hooks = []
    for layer in range(L):
        src = torch.zeros(rows, T, dtype=torch.bool)
        for centre in range(L):
            if layer in window_layers(centre, window, L):
                src[3 * centre:3 * centre + 3] = sets
        if bool(src.any()):
            hooks += knockout_hooks(model, src, [T - 1], [layer], mamba_mode=mamba_mode)
    with torch.no_grad(), model.hooks(hooks):
        knocked = model(tokens.repeat(rows, 1))[:, -1].float().softmax(-1)[:, target_id]
    p = float(probs[target_id])
    change = ((knocked - p) / p * 100).view(L, 3).T.contiguous()
    strs = [str(s) for s in model.to_str_tokens(tokens[0])]
    return FlowResult(prompt if isinstance(prompt, str) else "".join(strs), strs, (start, stop),
                      model.to_string([target_id]), target_id, window, p, change,
                      "attention" if model.has_attention_heads else f"mamba {mamba_mode}")
