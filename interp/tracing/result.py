"""``TraceResult``: one causal trace (Meng et al. 2022) with a ROME-style heatmap, JSON and an offline HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from interp.reports import Result, figure_html, table_html
from interp.reports.html import escape

__all__ = ["TraceResult"]

_COLORS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}  # ROME's figure


@dataclass(frozen=True, eq=False)
class TraceResult(Result):
    """Restored probability of the target per (layer, token or subject span), with the clean and corrupted
    baselines (Meng et al. 2022, section 2.1)."""

    prompt: str
    str_tokens: list[str]
    """Token strings of the prompt."""
    subject_span: tuple[int, int]
    """``(start, stop)`` token positions of the subject (half-open)."""
    target: str
    target_id: int
    site: str
    """``"resid"``, ``"mlp"``, ``"attn"`` or a Mamba component."""
    restore: str
    """``"token"`` or ``"span"``."""
    window: int
    """Layers restored together (1 for the residual stream)."""
    sever: str | None
    """Sublayer frozen at its corrupted value after the restored layer (ROME's severed graph), or None."""
    samples: int
    noise: float
    """Noise std as a multiple of std(W_E)."""
    noise_std: float
    """The absolute noise std."""
    seed: int
    p_clean: float
    """P(target) on the clean prompt."""
    p_corrupt: float
    """Mean P(target) over the corrupted samples."""
    scores: Tensor = field(repr=False)
    """Mean restored P(target) ``[layer, unit]``."""
    units: list[list[int]]
    """Token positions restored together, per column of ``scores``."""
    layers: list[int]
    """Layer of each row of ``scores``."""

    title = "Causal trace"

    @property
    def indirect_effect(self) -> Tensor:
        """``P_restored - P_corrupt`` per (layer, unit)."""
        return self.scores - self.p_corrupt

    @property
    def total_effect(self) -> float:
        """``P_clean - P_corrupt``."""
        return self.p_clean - self.p_corrupt

    def unit_labels(self) -> list[str]:
        """Token strings per unit; subject tokens marked with ``*`` as in ROME's figure."""
        start, stop = self.subject_span
        out = []
        for unit in self.units:
            text = "".join(self.str_tokens[i] for i in unit)
            star = "*" if start <= unit[0] < stop else ""
            out.append(f"{unit[0]}:{text!r}{star}" if len(unit) == 1 else f"{unit[0]}-{unit[-1]}:[{text!r}]*")
        return out

    def unit_of(self, position: int) -> int:
        """Index of the unit (column) that restores ``position``."""
        position %= len(self.str_tokens)
        for i, unit in enumerate(self.units):
            if position in unit:
                return i
        raise IndexError(f"position {position} is in no unit")

    def peak(self, position: int) -> tuple[int, float]:
        """``(layer, indirect effect)`` of the strongest restoration of ``position``'s unit."""
        column = self.indirect_effect[:, self.unit_of(position)]
        row = int(column.argmax())
        return self.layers[row], float(column[row])

    def summary(self) -> dict[str, Any]:
        """Headline numbers: total effect; peak indirect effect at the last subject token (or the span) and at the
        last token, with their layers."""
        last_subject, last = self.subject_span[1] - 1, len(self.str_tokens) - 1
        (ls, es), (ll, el) = self.peak(last_subject), self.peak(last)
        return {"p_clean": self.p_clean, "p_corrupt": self.p_corrupt, "total_effect": self.total_effect,
                "last_subject_peak_layer": ls, "last_subject_peak_ie": es, "last_token_peak_layer": ll,
                "last_token_peak_ie": el}

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "str_tokens": self.str_tokens, "subject_span": list(self.subject_span),
                "target": self.target, "target_id": self.target_id, "site": self.site, "restore": self.restore,
                "window": self.window, "sever": self.sever, "samples": self.samples, "noise": self.noise,
                "noise_std": self.noise_std, "seed": self.seed, "p_clean": self.p_clean, "p_corrupt": self.p_corrupt,
                "total_effect": self.total_effect, "scores": self.scores, "indirect_effect": self.indirect_effect,
                "units": self.units, "unit_labels": self.unit_labels(), "layers": self.layers,
                "summary": self.summary()}

    def plot(self):
        """ROME's heatmap: tokens down (subject starred), layers across, colour = indirect effect (negative values
        shown as 0, as ROME's colour scale starts at the corrupted probability); hover gives the exact values."""
        import plotly.graph_objects as go

        ie = self.indirect_effect.T  # [unit, layer]
        top = max(float(ie.max()), 1e-9)
        what = {"resid": "single restored layer", "mlp": f"center of {self.window} restored MLP layers",
                "attn": f"center of {self.window} restored attention layers"}.get(
            self.site, f"center of {self.window} restored {self.site} layers")
        sev = f", {self.sever} severed" if self.sever else ""
        fig = go.Figure(go.Heatmap(
            z=ie.numpy(), x=self.layers, y=self.unit_labels(), zmin=0, zmax=top,
            colorscale=_COLORS.get(self.site, "Purples"), colorbar_title=f"IE on p({self.target.strip()})",
            customdata=self.scores.T.numpy(),
            hovertemplate="%{y} layer %{x}<br>IE=%{z:.4f}<br>P restored=%{customdata:.4f}<extra></extra>"))
        fig.update_layout(
            title=(f"Causal trace ({self.site}{sev}, restore {self.restore}) of {self.target!r}: P clean "
                   f"{self.p_clean:.3f}, corrupted {self.p_corrupt:.3f}, total effect {self.total_effect:.3f}"),
            xaxis_title=what, yaxis_autorange="reversed", height=max(320, 28 * len(self.units) + 140))
        return fig

    def _html_sections(self) -> list:
        s = self.summary()
        rows = [("prompt", self.prompt), ("subject tokens", "".join(self.str_tokens[slice(*self.subject_span)])),
                ("target", f"{self.target!r} (id {self.target_id})"), ("P clean", self.p_clean),
                ("P corrupted (mean of samples)", self.p_corrupt), ("total effect", self.total_effect),
                ("last subject token: peak IE (layer)",
                 f"{s['last_subject_peak_ie']:.4f} ({s['last_subject_peak_layer']})"),
                ("last token: peak IE (layer)", f"{s['last_token_peak_ie']:.4f} ({s['last_token_peak_layer']})"),
                ("site / restore / window / sever", f"{self.site} / {self.restore} / {self.window} / {self.sever}"),
                ("samples / noise",
                 f"{self.samples} / {self.noise} x std(W_E) = {self.noise_std:.4g} (seed {self.seed})")]
        note = ("Meng et al. 2022: Gaussian noise on the subject's token embeddings; each cell restores the clean "
                "state at one layer (a window for MLP/attention/mixer sites) and token, and shows "
                "P_restored - P_corrupted averaged over the noise samples.")
        return [("Summary", table_html(rows, ["", ""])), ("Heatmap", figure_html(self.plot())),
                ("Protocol", f"<p class='note'>{escape(note)}</p>")]

