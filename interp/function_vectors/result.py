"""``FunctionVectorResult``: one task's function-vector experiment (Todd et al. 2024, "Function Vectors in Large
Language Models", ICLR): head CIEs, the top heads, accuracies with and without the vector, and the layer sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from interp.reports import Result, figure_html, table_html
from interp.reports.html import escape

__all__ = ["FunctionVectorResult"]


@dataclass(frozen=True, eq=False)
class FunctionVectorResult(Result):
    """What :func:`~interp.function_vectors.function_vectors` measured on one task."""

    model: str
    """What the model was loaded from (or its class)."""
    task: str
    n_pairs: int
    """Single-token pairs of the task (zero-shot prompts: one per pair)."""
    n_demos: int
    """Demonstrations per ICL prompt."""
    k: int
    """Heads summed into the function vector."""
    layer: int
    """Layer whose ``hook_resid_pre`` receives the vector (last token)."""
    icl_accuracy: float
    """Top-1 accuracy on the clean ICL prompts used for the CIE's corrupted set (same queries, true labels)."""
    corrupt_accuracy: float
    """Top-1 accuracy on the shuffled-label ICL prompts."""
    zero_shot_accuracy: float
    fv_accuracy: float
    """Zero-shot accuracy with the function vector added at ``layer``."""
    random_accuracies: list[float]
    """Zero-shot accuracy with a vector of ``k`` random heads' means, one per draw."""
    p_corrupt: float
    """Mean P(correct answer) on the corrupted prompts (the CIE's baseline)."""
    cie: Tensor = field(repr=False)
    """Causal indirect effect of each head ``[layer, head]``."""
    heads: list[tuple[int, int]]
    """The top-k heads by CIE, best first."""
    sweep_accuracy: list[float]
    """Zero-shot accuracy with the vector added at each layer ``0..n_layers-1``."""
    examples: list[dict[str, str]]
    """A few zero-shot prompts with the answer, the prediction without and with the vector."""
    n_mean: int = 0
    """Clean ICL prompts averaged for the mean head outputs."""
    n_cie: int = 0
    """Corrupted ICL prompts the CIE is averaged over."""
    seed: int = 0

    title = "Function vectors"

    @property
    def random_accuracy(self) -> float:
        """Mean over the random draws."""
        return sum(self.random_accuracies) / len(self.random_accuracies) if self.random_accuracies else float("nan")

    @property
    def best_layer(self) -> int:
        return max(range(len(self.sweep_accuracy)), key=lambda i: self.sweep_accuracy[i])

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "icl_accuracy": self.icl_accuracy, "corrupt_accuracy": self.corrupt_accuracy,
                "zero_shot_accuracy": self.zero_shot_accuracy, "fv_accuracy": self.fv_accuracy,
                "random_accuracy": self.random_accuracy, "layer": self.layer, "k": self.k,
                "best_layer": self.best_layer, "best_layer_accuracy": self.sweep_accuracy[self.best_layer],
                "top_heads": [[la, h, float(self.cie[la, h])] for la, h in self.heads]}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "n_pairs": self.n_pairs, "n_demos": self.n_demos,
                "k": self.k, "layer": self.layer, "n_mean": self.n_mean, "n_cie": self.n_cie, "seed": self.seed,
                "icl_accuracy": self.icl_accuracy, "corrupt_accuracy": self.corrupt_accuracy,
                "zero_shot_accuracy": self.zero_shot_accuracy, "fv_accuracy": self.fv_accuracy,
                "random_accuracies": self.random_accuracies, "random_accuracy": self.random_accuracy,
                "p_corrupt": self.p_corrupt, "cie": self.cie, "heads": [list(h) for h in self.heads],
                "sweep_accuracy": self.sweep_accuracy, "examples": self.examples, "summary": self.summary()}

    def plot(self):
        """Three panels: the CIE of every head (top heads marked), the accuracies, and the layer sweep."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=3, column_widths=[0.4, 0.25, 0.35], subplot_titles=(
            "CIE per head (x: top-k)", "accuracy", f"zero-shot + FV by layer (k={self.k})"))
        cie = self.cie.T.numpy()  # [head, layer]
        fig.add_trace(go.Heatmap(z=cie, colorscale="RdBu", zmid=0, colorbar={"x": 0.37, "len": 0.9},
                                 hovertemplate="layer %{x} head %{y}<br>CIE=%{z:.4f}<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=[la for la, _ in self.heads], y=[h for _, h in self.heads], mode="markers",
                                 marker={"symbol": "x", "color": "black", "size": 8}, name="top heads",
                                 showlegend=False), 1, 1)
        names = ["ICL (clean)", "ICL (shuffled)", "zero-shot", "zero-shot + FV", f"+ {self.k} random heads"]
        values = [self.icl_accuracy, self.corrupt_accuracy, self.zero_shot_accuracy, self.fv_accuracy,
                  self.random_accuracy]
        fig.add_trace(go.Bar(x=names, y=values, marker_color=["#777", "#bbb", "#999", "#c33", "#69c"],
                             showlegend=False, hovertemplate="%{x}: %{y:.3f}<extra></extra>"), 1, 2)
        layers = list(range(len(self.sweep_accuracy)))
        fig.add_trace(go.Scatter(x=layers, y=self.sweep_accuracy, mode="lines+markers", name="+ FV"), 1, 3)
        fig.add_trace(go.Scatter(x=layers, y=[self.zero_shot_accuracy] * len(layers), mode="lines",
                                 line={"dash": "dash", "color": "gray"}, name="zero-shot"), 1, 3)
        fig.update_xaxes(title_text="layer", row=1, col=1)
        fig.update_yaxes(title_text="head", row=1, col=1)
        fig.update_yaxes(range=[0, 1], row=1, col=2)
        fig.update_yaxes(range=[0, 1], row=1, col=3)
        fig.update_xaxes(title_text="layer the vector is added at", row=1, col=3)
        fig.update_layout(title=f"Function vector: {self.task} on {self.model} ({self.n_demos} demos, vector at "
                                f"layer {self.layer})", height=430, legend={"x": 1.0, "y": 0.1})
        return fig

    def _html_sections(self) -> list:
        rows = [("model", self.model), ("task", f"{self.task} ({self.n_pairs} single-token pairs)"),
                ("ICL accuracy (clean / shuffled labels)", f"{self.icl_accuracy:.3f} / {self.corrupt_accuracy:.3f}"),
                ("zero-shot accuracy", self.zero_shot_accuracy),
                (f"zero-shot + FV (top {self.k} heads, layer {self.layer})", self.fv_accuracy),
                (f"zero-shot + {self.k} random heads (mean of {len(self.random_accuracies)} draws)",
                 f"{self.random_accuracy:.3f} ({', '.join(f'{a:.3f}' for a in self.random_accuracies)})"),
                ("best layer of the sweep", f"{self.best_layer} ({self.sweep_accuracy[self.best_layer]:.3f})"),
                ("prompts (mean / CIE), demos, seed", f"{self.n_mean} / {self.n_cie}, {self.n_demos}, {self.seed}"),
                ("P(correct) on shuffled prompts", self.p_corrupt)]
        heads = [(f"{la}.{h}", float(self.cie[la, h])) for la, h in self.heads]
        ex = [(e["prompt"], e["answer"], e["zero_shot"], e["with_fv"]) for e in self.examples]
        note = ("Todd et al. 2024: mean head outputs (attn.hook_result at the last token) over clean ICL prompts; "
                "CIE = P(answer) when one head's last-token output on a shuffled-label prompt is set to its mean, "
                "minus P(answer) unpatched; the function vector is the sum of the top-k heads' means, added to "
                "blocks.{layer}.hook_resid_pre at the last token of zero-shot prompts 'Q: x\\nA:'.")
        return [("Summary", table_html(rows, ["", ""])), ("Figures", figure_html(self.plot())),
                ("Top heads", table_html(heads, ["layer.head", "CIE"])),
                ("Zero-shot examples", table_html(ex, ["prompt", "answer", "zero-shot", "with FV"])),
                ("Protocol", f"<p class='note'>{escape(note)}</p>")]
