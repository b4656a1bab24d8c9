"""The whole function-vector experiment of one task (Todd et al. 2024, "Function Vectors in Large Language Models",
ICLR): ICL accuracy, mean head outputs, head CIEs, the top-k function vector against random heads on zero-shot
prompts, and the layer sweep. :class:`FVConfig` holds every setting (the CLI maps 1:1 onto it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from interp.function_vectors.heads import causal_indirect_effects, mean_head_outputs, require_heads
from interp.function_vectors.result import FunctionVectorResult
from interp.function_vectors.tasks import Task, icl_prompts, make_task, zero_shot_prompts
from interp.function_vectors.vector import (
    accuracy,
    add_at_last_token,
    function_vector,
    layer_sweep,
    random_heads,
    top_heads,
)

__all__ = ["FVConfig", "function_vectors"]


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class FVConfig:
    """Settings of :func:`function_vectors` (defaults: the paper's, smaller under ``CI=true``)."""

    k: int = 10
    """Heads summed into the vector (Todd et al.: 10 of GPT-J's 448; on SmolLM2's 270 heads that is 3.7%)."""
    layer: int | None = None
    """Layer receiving the vector; None: ``n_layers // 3`` (the paper's best layers are about a third in)."""
    n_demos: int = 10
    """Demonstrations per ICL prompt (capped at the task's pairs - 1)."""
    n_mean: int = 100
    """Clean ICL prompts averaged for the mean head outputs."""
    n_cie: int = 25
    """Corrupted ICL prompts the CIE is averaged over."""
    n_random: int = 5
    """Draws of k random heads."""
    seed: int = 0
    n_examples: int = 8
    """Zero-shot examples kept in the result."""

    def __post_init__(self):
        for name in ("k", "n_demos", "n_mean", "n_cie", "n_random", "n_examples"):
            value = getattr(self, name)
            low = 0 if name in ("n_random", "n_examples") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ValueError(f"layer must be an int or None; got {self.layer!r}")

    @classmethod
    def small(cls, **overrides) -> FVConfig:
        """The ``CI=true`` sizes."""
        return cls(**{"n_mean": 12, "n_cie": 6, "n_random": 2, **overrides})


def function_vectors(model, task: str | Task, config: FVConfig | None = None, *, progress: bool = True,
                     **overrides) -> FunctionVectorResult:
    """Run Todd et al.'s protocol on ``task`` (a built-in name, see ``TASKS``, or a :class:`Task`).

    ``config`` (or keyword overrides of :class:`FVConfig`; under ``CI=true`` the default is ``FVConfig.small()``).
    Models without attention heads raise :class:`~interp.errors.CapabilityError`.
    """
    require_heads(model)
    if config is None:
        config = FVConfig.small(**overrides) if _ci() else FVConfig(**overrides)
    elif overrides:
        raise ValueError(f"pass either config or keyword overrides, not both (got {sorted(overrides)})")
    if isinstance(task, str):
        task = make_task(model, task)
    elif not isinstance(task, Task):
        raise TypeError(f"task must be a task name or a Task; got {type(task).__name__}")
    c = config
    layer = model.n_layers // 3 if c.layer is None else c.layer
    if not -model.n_layers <= layer < model.n_layers:
        raise ValueError(f"layer={layer} is out of range for {model.n_layers} layers")
    layer %= model.n_layers
    if c.k > model.n_layers * model.n_heads:
        raise ValueError(f"k={c.k} exceeds the model's {model.n_layers * model.n_heads} heads")
    n_demos = min(c.n_demos, len(task) - 1)

    clean_mean = icl_prompts(task, model, c.n_mean, n_demos, seed=c.seed)
    means = mean_head_outputs(model, clean_mean.tokens, progress=progress)
    # the CIE set: other draws; its clean twin gives the ICL accuracy on the same queries
    cie_clean = icl_prompts(task, model, c.n_cie, n_demos, seed=c.seed + 1)
    cie_corrupt = icl_prompts(task, model, c.n_cie, n_demos, seed=c.seed + 1, shuffle_labels=True)
    icl = accuracy(model, cie_clean.tokens, cie_clean.answers).float().mean().item()
    corrupt = accuracy(model, cie_corrupt.tokens, cie_corrupt.answers).float().mean().item()
    cie, p_corrupt = causal_indirect_effects(model, cie_corrupt.tokens, cie_corrupt.answers, means,
                                             progress=progress)
    heads = top_heads(cie, c.k)
    fv = function_vector(means, heads)

    zs = zero_shot_prompts(task, model)
    base_hits = accuracy(model, zs.tokens, zs.answers)
    fv_hits = accuracy(model, zs.tokens, zs.answers, hooks=add_at_last_token(model, fv, layer))
    rand = []
    for draw in range(c.n_random):
        vec = function_vector(means, random_heads(model.n_layers, model.n_heads, c.k, c.seed + 1000 + draw))
        rand.append(accuracy(model, zs.tokens, zs.answers, hooks=add_at_last_token(model, vec, layer))
                    .float().mean().item())
    sweep = layer_sweep(model, zs.tokens, zs.answers, fv, progress=progress)
    examples = _examples(model, task, zs, fv, layer, c.n_examples)
    return FunctionVectorResult(
        model=_name(model), task=task.name, n_pairs=len(task), n_demos=n_demos, k=c.k, layer=layer,
        icl_accuracy=icl, corrupt_accuracy=corrupt, zero_shot_accuracy=base_hits.float().mean().item(),
        fv_accuracy=fv_hits.float().mean().item(), random_accuracies=rand, p_corrupt=p_corrupt.mean().item(),
        cie=cie, heads=heads, sweep_accuracy=sweep.tolist(), examples=examples, n_mean=c.n_mean, n_cie=c.n_cie,
        seed=c.seed)


def _examples(model, task: Task, zs, fv, layer: int, n: int) -> list[dict[str, str]]:
    rows = torch.arange(min(n, zs.tokens.shape[0]))
    with torch.no_grad():
        base = model(zs.tokens[rows])[:, -1].argmax(-1)
        with model.hooks(add_at_last_token(model, fv, layer)):
            steered = model(zs.tokens[rows])[:, -1].argmax(-1)
    return [{"prompt": zs.texts[i], "answer": task.pairs[zs.queries[i]][1],
             "zero_shot": model.to_string([int(base[i])]), "with_fv": model.to_string([int(steered[i])])}
            for i in range(len(rows))]


def _name(model) -> str:
    return str(getattr(model, "name_or_path", None) or getattr(model.cfg, "model_name", None) or model.arch)
