"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"): one
affine translator per layer, ``h -> A_l h + b_l``, so that the translated stream through the model's final norm and
unembedding matches the model's final output distribution.

As in the paper (and its code), the translator is parametrised as a residual map ``A_l = I + W_l`` with ``W_l`` and
``b_l`` initialised at zero, so an untrained tuned lens *is* the logit lens; training minimises
``KL(p_final || p_lens_l)`` averaged over tokens, summed over layers (:mod:`interp.lenses.training`). The last entry
of the stack (the model's output, ``"final_post"``) has no translator: its lens is the model itself.

On disk a lens is a folder: ``lens.safetensors`` (``weight [n_layers, d_model, d_model]``, ``bias [n_layers,
d_model]``, with the JSON metadata in the safetensors header too) and ``lens.json`` (format, the model it was trained
for, shapes, training summary and held-out evaluation), written atomically; :meth:`TunedLens.load` refuses a lens
made for another model (different shapes, or a different unembedding).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from interp.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json

__all__ = ["TunedLens", "resid_stack", "model_identity", "FORMAT"]

FORMAT = "interp-tuned-lens"
_VERSION = 1


def resid_stack(model, tokens: Tensor, *, apply_ln: bool, attention_mask: Tensor | None = None
                ) -> tuple[Tensor, list[str]]:
    """``([n_layers + 1, batch, pos, d_model], labels)``: the stream entering each block and the final
    ``resid_post`` (``cache.accumulated_resid``; ``apply_ln``: through the model's final norm)."""
    n = model.n_layers
    names = [model.components(layer)["resid_pre"] for layer in range(n)] + [model.components(n - 1)["resid_post"]]
    _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None, attention_mask=attention_mask)
    return cache.accumulated_resid(apply_ln=apply_ln, return_labels=True)


def model_identity(model) -> dict[str, Any]:
    """What a lens records about its model: name, architecture, sizes and a fingerprint of the unembedding (the
    first 16 vocabulary columns of ``W_U`` rounded to bfloat16, so a float32 and a bfloat16 load agree)."""
    w = model.W_U.detach()[:, :16].to(torch.bfloat16).float().cpu().contiguous()
    digest = hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]
    return {"name": getattr(model.cfg, "model_name", None), "arch": model.arch, "n_layers": int(model.n_layers),
            "d_model": int(model.d_model), "d_vocab": int(model.d_vocab), "fingerprint": digest}


class TunedLens(nn.Module):
    """One affine translator per layer, ``translate(h, l) = h + h @ weight[l].T + bias[l]`` (Belrose et al. 2023).

    >>> lens = TunedLens.train(model, steps=100)          # builtin text, a held-out split, KL to the final layer
    >>> lens.heldout.plot()                               # held-out KL per layer, tuned vs logit lens
    >>> lens.save("lens_dir"); lens = TunedLens.load("lens_dir", model)
    >>> logit_lens(model, "The Eiffel Tower is in", lens=lens).plot()
    """

    def __init__(self, n_layers: int, d_model: int, model_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        from interp.checks import check_int

        n_layers, d_model = check_int(n_layers, "n_layers", lo=1), check_int(d_model, "d_model", lo=1)
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        """``[n_layers, d_model, d_model]``: ``A_l - I`` (zero: the identity translator)."""
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))
        """``[n_layers, d_model]``: ``b_l``."""
        self.model_info = dict(model_info or {})
        """:func:`model_identity` of the model the lens was made for."""
        self.training_info: dict[str, Any] = {}
        """What training did: steps, tokens, seconds, config (empty for an untrained lens)."""
        self.heldout = None
        """The held-out :class:`~interp.lenses.LensEval` measured after training (None if none was made)."""

    @classmethod
    def identity(cls, model) -> TunedLens:
        """An untrained lens for ``model`` (every translator the identity: equal to the logit lens)."""
        p = next(iter(model.parameters()), None)
        lens = cls(model.n_layers, model.d_model, model_identity(model))
        return lens.to(model.device, p.dtype if p is not None and p.is_floating_point() else torch.float32)

    @classmethod
    def train(cls, model, tokens: Tensor | None = None, config=None, *, checkpoint: str | Path | None = None,
              progress: bool = True, **overrides) -> TunedLens:
        """Train a lens for ``model`` on ``tokens`` (``[n_seq, ctx]``; None: the builtin text corpus) with a
        :class:`~interp.lenses.TrainConfig` (or its fields as keyword overrides); ``checkpoint``: a folder to
        save progress in and resume from. See :func:`interp.lenses.training.train_tuned_lens`."""
        from interp.lenses.training import TrainConfig, train_tuned_lens

        if config is None:
            config = TrainConfig(**overrides)
        elif overrides:
            raise TypeError("pass either config= or keyword overrides, not both")
        return train_tuned_lens(model, tokens, config, checkpoint=checkpoint, progress=progress)

    # ------------------------------------------------------------------ maths
    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[1])

    def translate(self, h: Tensor, layer: int) -> Tensor:
        """The translated stream ``h + h @ weight[layer].T + bias[layer]`` for ``h [..., d_model]`` entering block
        ``layer`` (``layer == n_layers``: the model's output, returned unchanged)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be an int in [0, {self.n_layers}]; got {layer!r}")
        if not isinstance(h, Tensor) or h.shape[-1:] != (self.d_model,):
            raise ValueError(f"h must be a tensor [..., d_model={self.d_model}]; got "
                             f"{tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__}")
        if layer == self.n_layers:
            return h
        w, b = self.weight[layer].to(h.dtype), self.bias[layer].to(h.dtype)
        return h + h @ w.T + b

    def translate_stack(self, stack: Tensor) -> Tensor:
        """``stack [n_layers + 1, ..., d_model]`` (``accumulated_resid(apply_ln=False)``) with every entry but the
        last translated (equal to :meth:`translate` on each entry)."""
        if not isinstance(stack, Tensor) or stack.ndim < 2 or stack.shape[0] != self.n_layers + 1 \
                or stack.shape[-1] != self.d_model:
            got = tuple(stack.shape) if isinstance(stack, Tensor) else type(stack).__name__
            raise ValueError(f"stack must be [n_layers + 1 = {self.n_layers + 1}, ..., d_model={self.d_model}]; "
                             f"got {got}")
        body = stack[:-1]
        w, b = self.weight.to(stack.dtype), self.bias.to(stack.dtype)
        flat = body.reshape(self.n_layers, -1, self.d_model)
        moved = (flat + torch.bmm(flat, w.transpose(1, 2)) + b[:, None]).reshape(body.shape)
        return torch.cat([moved, stack[-1:]])

    def logits(self, model, h: Tensor, layer: int) -> Tensor:
        """The tuned lens's logits for a stream ``h [..., d_model]`` entering block ``layer``:
        ``apply_ln_final(translate(h, layer)) @ W_U + b_U``."""
        return model.apply_ln_final(self.translate(h, layer)) @ model.W_U + model.b_U

    def apply(self, model, tokens) -> Tensor:
        """``[n_layers + 1, batch, pos, d_vocab]``: every layer's tuned-lens logits on ``tokens`` (text or ids); the
        last entry is the model's own logits."""
        from interp.lenses.logit import layer_logits

        return layer_logits(model, model.check_tokens(tokens), self)[0]

    def evaluate(self, model, tokens: Tensor, *, batch_size: int = 8, progress: bool = True):
        """Held-out KL per layer of this lens and of the logit lens on ``tokens [n_seq, ctx]``
        (:func:`interp.lenses.evaluate_lenses`)."""
        from interp.lenses.evaluate import evaluate_lenses

        return evaluate_lenses(model, tokens, self, batch_size=batch_size, progress=progress)

    # ------------------------------------------------------------------ models
    def check_model(self, model) -> None:
        """Raise a ValueError unless ``model`` is the model this lens was made for (sizes and fingerprint)."""
        have = model_identity(model)
        want = self.model_info
        if (model.n_layers, model.d_model) != (self.n_layers, self.d_model):
            raise ValueError(f"this tuned lens has {self.n_layers} translators of d_model {self.d_model}; the model "
                             f"given has {model.n_layers} layers of d_model {model.d_model}: it was made for "
                             f"{_describe(want)}, not for {_describe(have)}")
        keys = ("arch", "n_layers", "d_model", "d_vocab", "fingerprint")
        diff = [k for k in keys if k in want and want[k] != have[k]]
        if diff:
            raise ValueError(f"this tuned lens was trained for {_describe(want)}; the model given is "
                             f"{_describe(have)} (they differ in {', '.join(diff)}); train a lens for this model "
                             "(TunedLens.train or `interp tuned-lens`)")

    # ------------------------------------------------------------------ disk
    def metadata(self) -> dict[str, Any]:
        """The ``lens.json`` content."""
        return {"format": FORMAT, "version": _VERSION, "model": self.model_info,
                "shapes": {"weight": list(self.weight.shape), "bias": list(self.bias.shape)},
                "training": self.training_info, "heldout": self.heldout.to_dict() if self.heldout else None}

    def save(self, path: str | Path) -> Path:
        """Write the lens to folder ``path`` (``lens.safetensors`` + ``lens.json``), atomically: the folder
        appears complete or not at all, and an existing one is replaced only once the new one is written."""
        from interp.reports import to_jsonable

        meta = to_jsonable(self.metadata())
        header = {"format": FORMAT, "model": json.dumps(meta["model"]), "shapes": json.dumps(meta["shapes"])}
        with atomic_dir(path) as tmp:
            atomic_save_safetensors({"weight": self.weight.detach().float(), "bias": self.bias.detach().float()},
                                    tmp / "lens.safetensors", metadata=header)
            atomic_write_json(meta, tmp / "lens.json")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, model=None) -> TunedLens:
        """The lens saved in folder ``path``; with ``model``, checked against it (a lens trained for another model
        is refused) and moved to its device."""
        from safetensors import safe_open

        from interp.files import check_safetensors, read_json_object

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"path {str(path)!r} is not a tuned-lens folder (expected lens.safetensors and "
                                    "lens.json written by TunedLens.save)")
        meta = read_json_object(path / "lens.json", "a tuned lens's metadata")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / 'lens.json'}: format is {meta.get('format')!r}, not {FORMAT!r}")
        weights = path / "lens.safetensors"
        names = set(check_safetensors(weights))
        if names != {"weight", "bias"}:
            raise ValueError(f"{weights}: holds tensors {sorted(names)}; a tuned lens holds exactly 'weight' and "
                             "'bias'")
        with safe_open(str(weights), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("weight", "bias")}
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != meta.get("shapes") or header.get("shapes") and json.loads(header["shapes"]) != shapes:
            raise ValueError(f"{path}: the tensors' shapes {shapes} do not match the metadata's {meta.get('shapes')}")
        n, d = shapes["weight"][0], shapes["weight"][1]
        if shapes["weight"] != [n, d, d] or shapes["bias"] != [n, d]:
            raise ValueError(f"{weights}: weight must be [n_layers, d_model, d_model] and bias [n_layers, d_model]; "
                             f"got {shapes}")
        lens = cls(n, d, meta.get("model"))
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            lens.bias.copy_(tensors["bias"])
        lens.training_info = meta.get("training") or {}
        if meta.get("heldout"):
            from interp.lenses.evaluate import LensEval

            lens.heldout = LensEval.from_dict(meta["heldout"])
        if model is not None:
            lens.check_model(model)
            lens = lens.to(model.device)
        return lens


def _describe(info: dict[str, Any]) -> str:
    name = info.get("name") or info.get("arch") or "a model"
    return (f"{name} ({info.get('arch')}, {info.get('n_layers')} layers, d_model {info.get('d_model')}, vocab "
            f"{info.get('d_vocab')}, W_U fingerprint {info.get('fingerprint')})")
