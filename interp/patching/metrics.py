"""Patching metrics: ``metric(logits [batch, pos, d_vocab]) -> Tensor[batch]``, one value per prompt.

Any callable of that shape works. The helpers here (:func:`logit_diff`, :func:`target_prob`) are :class:`Metric`
objects that also say which logit positions they read (``positions``, default the last one), so the patching
engine computes the unembedding only there (for SmolLM2 the unembedding of one position costs as much as eight
transformer blocks) and hands them just those positions (:meth:`Metric.at_positions`).

Answers are token ids, one per prompt or one for all, or single-token strings (``" Paris"``) that the engine turns
into ids with ``model.to_single_token`` (:meth:`Metric.bind`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Metric", "LogitDiff", "TargetProb", "logit_diff", "target_prob", "bind_metric", "evaluate_metric"]

Answer = int | str | Sequence[int | str] | Tensor


class Metric:
    """A metric that reads only the logits at ``positions`` (negative: from the end).

    Subclasses define :meth:`at_positions` (logits ``[batch, len(positions), d_vocab]`` -> ``[batch]``); calling the
    metric on full logits selects those positions first.
    """

    positions: tuple[int, ...] = (-1,)
    name: str = "metric"

    def __call__(self, logits: Tensor) -> Tensor:
        if not isinstance(logits, Tensor) or logits.ndim != 3:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{self.name}: logits must be [batch, pos, d_vocab]; got {got}")
        T = logits.shape[1]
        bad = [p for p in self.positions if not -T <= p < T]
        if bad:
            raise IndexError(f"{self.name}: positions {bad} are out of range for {T} positions")
        return self.at_positions(logits[:, [p % T for p in self.positions]])

    def at_positions(self, logits: Tensor) -> Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def bind(self, model) -> Metric:
        """This metric with every text answer turned into a token id of ``model`` (itself if there is none)."""
        return self

    def describe(self) -> str:
        return self.name


def _ids(answer: Answer, model, arg: str) -> int | list[int] | Tensor:
    if isinstance(answer, Tensor):
        return answer
    if isinstance(answer, str):
        return model.to_single_token(answer)
    if isinstance(answer, Sequence):
        return [_ids(a, model, arg) for a in answer]
    return answer


def _has_text(answer: Answer) -> bool:
    if isinstance(answer, str):
        return True
    return isinstance(answer, Sequence) and any(isinstance(a, str) for a in answer)


def _gather(logits: Tensor, answer: Answer, arg: str, name: str) -> Tensor:
    """``logits [batch, d_vocab]`` at ``answer`` (one id, or one id per row) -> ``[batch]``."""
    if _has_text(answer):
        raise ValueError(f"{name}: {arg}={answer!r} is text; call metric.bind(model) (the patching functions do) or "
                         "pass token ids")
    b, V = logits.shape
    ids = torch.as_tensor(answer, device=logits.device)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"{name}: {arg} must be token ids (ints); got {ids.dtype}")
    if ids.ndim == 0:
        ids = ids.expand(b)
    if ids.shape != (b,):
        raise ValueError(f"{name}: {arg} has {ids.numel()} ids but the logits have {b} rows; pass one id, or one per "
                         "prompt")
    if int(ids.min()) < 0 or int(ids.max()) >= V:
        raise ValueError(f"{name}: {arg} holds ids outside the vocabulary 0..{V - 1}")
    return logits.gather(1, ids.long()[:, None])[:, 0]


@dataclass(frozen=True, eq=False)
class LogitDiff(Metric):
    """``logit[answer] - logit[wrong]`` at position ``pos`` (Wang et al. 2022, the IOI logit difference)."""

    answer: Answer
    """Correct token: an id, a single-token string, or one per prompt."""
    wrong: Answer
    """Incorrect token(s), as ``answer``."""
    pos: int = -1
    """Logit position read (negative: from the end)."""
    label: str | None = None
    """What :meth:`describe` says (set by :meth:`bind`, so the token strings survive their conversion to ids)."""

    @property
    def positions(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.pos,)

    name = "logit_diff"

    def at_positions(self, logits: Tensor) -> Tensor:
        last = _upcast(logits[:, 0])
        return _gather(last, self.answer, "answer", self.name) - _gather(last, self.wrong, "wrong", self.name)

    def bind(self, model) -> LogitDiff:
        return dataclasses.replace(self, answer=_ids(self.answer, model, "answer"),
                                   wrong=_ids(self.wrong, model, "wrong"), label=self.describe())

    def describe(self) -> str:
        return self.label or f"logit({_show(self.answer)}) - logit({_show(self.wrong)}) at position {self.pos}"


@dataclass(frozen=True, eq=False)
class TargetProb(Metric):
    """Softmax probability of ``answer`` at position ``pos`` (the metric of causal tracing, Meng et al. 2022)."""

    answer: Answer
    """Target token: an id, a single-token string, or one per prompt."""
    pos: int = -1
    """Logit position read (negative: from the end)."""
    label: str | None = None
    """What :meth:`describe` says (set by :meth:`bind`)."""

    @property
    def positions(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.pos,)

    name = "target_prob"

    def at_positions(self, logits: Tensor) -> Tensor:
        probs = _upcast(logits[:, 0]).softmax(-1)
        return _gather(probs, self.answer, "answer", self.name)

    def bind(self, model) -> TargetProb:
        return dataclasses.replace(self, answer=_ids(self.answer, model, "answer"), label=self.describe())

    def describe(self) -> str:
        return self.label or f"P({_show(self.answer)}) at position {self.pos}"


def _upcast(x: Tensor) -> Tensor:
    """float32 at least (half-precision logits lose the answer's probability)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _show(answer: Answer) -> str:
    if isinstance(answer, Tensor):
        answer = answer.tolist()
    return repr(answer)


def logit_diff(answer: Answer, wrong: Answer, *, pos: int = -1) -> LogitDiff:
    """Metric ``logit[answer] - logit[wrong]`` at position ``pos`` (default the last), per prompt (Wang et al. 2022).

    ``answer``/``wrong``: token ids (one, or one per prompt) or single-token strings such as ``" Paris"``.
    """
    return LogitDiff(answer, wrong, _check_pos(pos))


def target_prob(answer: Answer, *, pos: int = -1) -> TargetProb:
    """Metric ``softmax(logits[:, pos])[answer]`` per prompt: the probability of the answer (Meng et al. 2022)."""
    return TargetProb(answer, _check_pos(pos))


def _check_pos(pos) -> int:
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise TypeError(f"pos must be an int position; got {pos!r}")
    return pos


def bind_metric(metric: Callable[[Tensor], Tensor], model) -> Callable[[Tensor], Tensor]:
    """``metric`` ready for ``model``: text answers of a :class:`Metric` become token ids; a callable is checked."""
    if isinstance(metric, Metric):
        return metric.bind(model)
    if not callable(metric):
        raise TypeError(f"metric must be a callable logits [batch, pos, d_vocab] -> Tensor[batch]; got "
                        f"{type(metric).__name__}")
    return metric


def evaluate_metric(metric, logits: Tensor, batch: int, *, selected: bool = False) -> Tensor:
    """``metric`` on ``logits`` checked to give one float per prompt: ``[batch]``. ``selected``: the logits are
    already the metric's positions (``Metric.at_positions``)."""
    out = metric.at_positions(logits) if selected else metric(logits)
    if not isinstance(out, Tensor):
        raise TypeError(f"metric returned {type(out).__name__}; expected a Tensor[batch] (one value per prompt)")
    if out.shape != (batch,):
        raise ValueError(f"metric returned shape {tuple(out.shape)}; expected [{batch}] (one value per prompt; "
                         "a scalar mean over prompts is not enough: return the per-prompt values)")
    if not out.dtype.is_floating_point:
        out = out.float()
    return out
