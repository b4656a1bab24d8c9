"""The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens", LessWrong): decode every layer's
residual stream with the model's own final norm and unembedding, ``logits_l = ln_final(resid_l) @ W_U + b_U``, and
read off what the model "believes" after each layer.

The per-layer streams come from :meth:`ActivationCache.accumulated_resid` (``apply_ln=True``: the final norm, weight
and bias included), so the lens rides on the residual stream and works on every model kind the cache supports,
transformers and Mamba alike. Entry ``l < n_layers`` is the stream entering block ``l`` (``"{l}_pre"``; entry 0 is
the embedding), the last entry (``"final_post"``) is the model's output, so its logits are the model's logits.
A tuned lens (:class:`~interp.lenses.TunedLens`, Belrose et al. 2023) passes each stream through its translator
first; ``logit_lens(model, prompt, lens=tuned)`` draws the same figure for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.reports import Result, figure_html, table_html

__all__ = ["logit_lens", "LogitLensResult", "layer_logits", "prepare_tokens", "resolve_answer"]


def prepare_tokens(model, prompt_or_tokens, arg: str = "prompt_or_tokens") -> Tensor:
    """One prompt as ``LongTensor[1, pos]``: a string (tokenised with BOS), ids ``[pos]`` or ``[1, pos]``."""
    if isinstance(prompt_or_tokens, str):
        if not prompt_or_tokens:
            raise ValueError(f"{arg} is an empty string; pass a prompt or token ids")
        return model.to_tokens(prompt_or_tokens)
    if isinstance(prompt_or_tokens, (list, tuple)) and all(isinstance(t, int) for t in prompt_or_tokens):
        prompt_or_tokens = torch.tensor(list(prompt_or_tokens), dtype=torch.long)
    if not isinstance(prompt_or_tokens, Tensor):
        raise TypeError(f"{arg} must be a string or token ids [pos] / [1, pos]; got {type(prompt_or_tokens).__name__}")
    tokens = prompt_or_tokens[None] if prompt_or_tokens.ndim == 1 else prompt_or_tokens
    if tokens.ndim != 2 or tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise ValueError(f"{arg} must be one prompt: ids [pos] or [1, pos]; got shape {tuple(prompt_or_tokens.shape)}"
                         " (for a batch, call once per prompt or use TunedLens.evaluate)")
    return model.check_tokens(tokens.to(model.device), arg)


def layer_logits(model, tokens: Tensor, lens=None) -> tuple[Tensor, list[str]]:
    """``([n_layers + 1, batch, pos, d_vocab], labels)``: each layer's logits through the final norm and the
    unembedding (the logit lens), or through ``lens``'s translators first (a :class:`~interp.lenses.TunedLens`)."""
    from interp.lenses.tuned import resid_stack

    with torch.no_grad():
        if lens is None:
            stack, labels = resid_stack(model, tokens, apply_ln=True)
        else:
            lens.check_model(model)
            stack, labels = resid_stack(model, tokens, apply_ln=False)
            stack = model.apply_ln_final(lens.translate_stack(stack))
        return stack @ model.W_U + model.b_U, labels


def resolve_answer(model, answer, default_id: int) -> int:
    """``answer`` (a one-token string, a token id, or None for ``default_id``) as a token id."""
    if answer is None:
        return int(default_id)
    if isinstance(answer, str):
        return model.to_single_token(answer)
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise TypeError(f"answer must be a one-token string (e.g. ' Paris'), a token id or None; got "
                        f"{type(answer).__name__}")
    if not 0 <= answer < model.d_vocab:
        raise ValueError(f"answer id {answer} is outside the vocabulary [0, {model.d_vocab})")
    return answer


def logit_lens(model, prompt_or_tokens, answer=None, *, position: int = -1, top_k: int = 5,
               lens=None) -> LogitLensResult:
    """The logit lens on one prompt: every layer's residual stream decoded by the final norm and the unembedding.

    ``answer``: the token whose rank and probability are tracked by layer at ``position`` (a one-token string, an
    id, or None: the model's final top prediction there). ``top_k``: tokens listed per layer at ``position``.
    ``lens``: a :class:`~interp.lenses.TunedLens` to decode with instead (the tuned lens). Returns a
    :class:`LogitLensResult` (``plot()``, ``to_json()``, ``save_html()``)."""
    from interp.checks import check_int

    tokens = prepare_tokens(model, prompt_or_tokens)
    n_pos = tokens.shape[1]
    if isinstance(position, bool) or not isinstance(position, int) or not -n_pos <= position < n_pos:
        raise ValueError(f"position must be an int in [{-n_pos}, {n_pos}) for this {n_pos}-token prompt; got "
                         f"{position!r}")
    position %= n_pos
    top_k = check_int(top_k, "top_k", lo=1, hi=model.d_vocab)
    logits, labels = layer_logits(model, tokens, lens)
    logits = logits[:, 0].float()  # [layer, pos, vocab]
    logprobs = logits.log_softmax(-1)
    answer_id = resolve_answer(model, answer, int(logits[-1, position].argmax()))
    at = logits[:, position]
    ranks = (at > at[:, answer_id, None]).sum(-1)
    probs = logprobs[:, position, answer_id].exp()
    top_p, top_i = logprobs[:, position].exp().topk(top_k, dim=-1)
    best_p, best_i = logprobs.max(-1)
    decode = _decoder(model)
    return LogitLensResult(
        prompt=prompt_or_tokens if isinstance(prompt_or_tokens, str) else None,
        str_tokens=[decode(t) for t in tokens[0].tolist()], labels=labels, position=position,
        answer=decode(answer_id), answer_id=answer_id, lens="tuned" if lens is not None else "logit",
        answer_rank=ranks.cpu(), answer_prob=probs.cpu(),
        top_tokens=[[decode(i) for i in row] for row in top_i.tolist()], top_probs=top_p.cpu(),
        best_tokens=[[decode(i) for i in row] for row in best_i.tolist()], best_probs=best_p.exp().cpu(),
        final_kl=_kl_to_final(logprobs).cpu())


def _decoder(model):
    tok = getattr(model, "tokenizer", None)
    return (lambda i: tok.decode([i])) if tok is not None else (lambda i: f"<{i}>")


def _kl_to_final(logprobs: Tensor) -> Tensor:
    """``[layer, pos]``: KL(final || layer) in nats."""
    final = logprobs[-1]
    return (final.exp() * (final - logprobs)).sum(-1).clamp_min(0)


@dataclass(frozen=True, eq=False)
class LogitLensResult(Result):
    """What each layer of one prompt decodes to (nostalgebraist 2020), with one answer token tracked by layer."""

    prompt: str | None
    """The prompt text (None when token ids were given)."""
    str_tokens: list[str]
    """Token strings of the prompt."""
    labels: list[str]
    """Layer labels: ``"{l}_pre"`` (the stream entering block l) then ``"final_post"`` (the model's output)."""
    position: int
    """The position whose prediction ``answer_*`` and ``top_*`` describe (non-negative)."""
    answer: str
    """The tracked token (default: the model's final top prediction at ``position``)."""
    answer_id: int
    lens: str
    """``"logit"`` or ``"tuned"``."""
    answer_rank: Tensor = field(repr=False)
    """``[layer]``: the answer's rank at ``position`` (0 = top prediction)."""
    answer_prob: Tensor = field(repr=False)
    """``[layer]``: the answer's probability at ``position``."""
    top_tokens: list[list[str]] = field(repr=False)
    """``[layer][k]``: the top-k tokens at ``position``."""
    top_probs: Tensor = field(repr=False)
    """``[layer, k]``: their probabilities."""
    best_tokens: list[list[str]] = field(repr=False)
    """``[layer][pos]``: the top-1 token at every position (the heatmap's text)."""
    best_probs: Tensor = field(repr=False)
    """``[layer, pos]``: its probability (the heatmap's colour)."""
    final_kl: Tensor = field(repr=False)
    """``[layer, pos]``: KL(model's output || this layer's decoding), nats."""

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"{'Tuned' if self.lens == 'tuned' else 'Logit'} lens"

    def first_layer_top(self) -> int | None:
        """Index (into ``labels``) of the first layer from which the answer stays the top prediction, or None."""
        top = (self.answer_rank == 0).tolist()
        for i in range(len(top)):
            if all(top[i:]):
                return i
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"lens": self.lens, "prompt": self.prompt, "str_tokens": self.str_tokens, "labels": self.labels,
                "position": self.position, "answer": self.answer, "answer_id": self.answer_id,
                "answer_rank": self.answer_rank.tolist(), "answer_prob": self.answer_prob.tolist(),
                "top_tokens": self.top_tokens, "top_probs": self.top_probs.tolist(),
                "best_tokens": self.best_tokens, "best_probs": self.best_probs.tolist(),
                "final_kl": self.final_kl.tolist(), "first_layer_top": self.first_layer_top()}

    def plot(self):
        """Two panels: the top-1 token per (layer, position) coloured by its probability (nostalgebraist's figure),
        and the answer's rank (log scale) and probability by layer."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, row_heights=[0.62, 0.38], vertical_spacing=0.12,
                            specs=[[{}], [{"secondary_y": True}]],
                            subplot_titles=[f"top prediction per layer and position ({self.lens} lens)",
                                            f"answer {self.answer!r} at position {self.position}"])
        cols = [f"{i}:{t!r}" for i, t in enumerate(self.str_tokens)]
        text = [[t.replace("\n", "\\n") for t in row] for row in self.best_tokens]
        fig.add_trace(go.Heatmap(z=self.best_probs.tolist(), x=cols, y=self.labels, text=text,
                                 texttemplate="%{text}", textfont={"size": 9}, colorscale="Blues", zmin=0, zmax=1,
                                 colorbar={"title": "P(top)", "len": 0.55, "y": 0.73},
                                 hovertemplate="%{y} %{x}<br>top %{text}: %{z:.3f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=self.labels, y=(self.answer_rank + 1).tolist(), mode="lines+markers",
                                 name="rank + 1"), row=2, col=1)
        fig.add_trace(go.Scatter(x=self.labels, y=self.answer_prob.tolist(), mode="lines+markers",
                                 name="probability"), row=2, col=1, secondary_y=True)
        fig.update_yaxes(type="log", title_text="rank + 1", row=2, col=1, secondary_y=False)
        fig.update_yaxes(title_text="P(answer)", range=[0, 1], row=2, col=1, secondary_y=True)
        fig.update_layout(height=max(600, 22 * len(self.labels) + 350), width=max(700, 60 * len(cols) + 250),
                          legend={"orientation": "h", "y": -0.08})
        return fig

    def _html_sections(self) -> list:
        rows = [(label, int(r), float(p), ", ".join(repr(t) for t in top))
                for label, r, p, top in zip(self.labels, self.answer_rank.tolist(), self.answer_prob.tolist(),
                                            self.top_tokens)]
        head = f"position {self.position} ({self.str_tokens[self.position]!r}), answer {self.answer!r}"
        return [("Figure", figure_html(self.plot())),
                ("By layer: " + head,
                 table_html(rows, ["layer", "rank", "P(answer)", f"top {len(self.top_tokens[0])}"]))]
