"""Twins: one tiny Hugging Face model loaded into our wrapper and into TransformerLens 3.9's ``HookedTransformer``.

Per family (``gpt2``, ``llama`` with grouped-query attention) the same saved weights are loaded three ways:

- ``ours``: ``interp.load_model(path)`` (original, unfolded weights);
- ``folded``: a ``HookedTransformer`` with ``fold_ln=True`` (``center_writing_weights``, ``center_unembed``,
  ``fold_value_biases``, ``refactor_factored_attn_matrices`` off; for LayerNorm, fold_ln itself still centres the
  weights that read a norm's output, ``W_U`` included): what most TransformerLens users analyse, and what our cache
  helpers are compared against;
- ``unfolded``: the same with ``fold_ln=False``: what our weights (``W_Q``.., ``OV``/``QK``), ``cfg`` and the full
  final norm of ``accumulated_resid(apply_ln=True)`` are compared against.

The TransformerLens config comes from TransformerLens's own HF-to-TL mapping (``convert_hf_model_config`` on the local
folder) and the weights from its own converters (``convert_gpt2_weights``/``convert_llama_weights``), so a config
field or weight layout is what TransformerLens itself would give. HF initialises every norm weight to 1 and every
bias to 0, which would make folding a no-op and every "folded or unfolded?" question untestable; each 1-D parameter
(norm weights, norm biases, GPT-2's projection biases) is therefore moved off its initial value before saving.

Tests get a :class:`Pair` (fixtures ``pair``, ``unfolded_pair``, ``single_pair``; or ``twins.pair(...)``): the same
checks run on TransformerLens's side and on ours (:meth:`Pair.both`), and the two results must agree
(``pair.same``, :func:`assert_same`: tensors to 1e-4 with equal shapes, labels exactly). Test modules import nothing
from here: everything comes through the fixtures.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import interp

FAMILIES = ("gpt2", "llama")
ATOL = 1e-4
BATCH, POS = 3, 8


@dataclass
class Twins:
    """One family's saved tiny model, loaded by Hugging Face, by us and twice by TransformerLens."""

    family: str
    path: Path
    hf: Any
    ours: interp.HookedModel
    folded: Any
    unfolded: Any
    tokens: Tensor
    """``[BATCH, POS]`` random token ids of real characters, shared by every test."""

    def tl(self, flavour: str):
        return {"folded": self.folded, "unfolded": self.unfolded}[flavour]

    def tl_cache(self, flavour: str = "folded", tokens: Tensor | None = None):
        """A fresh TransformerLens cache of the ``flavour`` twin (TransformerLens's caches mutate themselves)."""
        with torch.no_grad():
            return self.tl(flavour).run_with_cache(self.tokens if tokens is None else tokens)[1]

    def our_cache(self, tokens: Tensor | None = None, **kwargs):
        """A fresh cache of ours (``kwargs``: ``run_with_cache``'s, e.g. ``names_filter``)."""
        return self.ours.run_with_cache(self.tokens if tokens is None else tokens, **kwargs)[1]

    def pair(self, tokens: Tensor | None = None, flavour: str = "folded") -> Pair:
        """Fresh caches of TransformerLens's ``flavour`` twin and of ours on ``tokens`` (default: the shared ones)."""
        tokens = self.tokens if tokens is None else tokens
        return Pair(self, Side("tl", self.tl(flavour), self.tl_cache(flavour, tokens)),
                    Side("ours", self.ours, self.our_cache(tokens)))

    @staticmethod
    def same(theirs, ours, where: str = "result") -> None:
        """See :func:`assert_same`."""
        assert_same(theirs, ours, where)


@dataclass
class Side:
    """One implementation under test: its model and a fresh cache of its run (tests may mutate TL's caches)."""

    name: str
    """``"tl"`` (TransformerLens, folded unless a test asked for the unfolded twin) or ``"ours"``."""
    model: Any
    cache: Any

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers if self.name == "tl" else self.model.n_layers


@dataclass
class Pair:
    """TransformerLens's side and ours, on the same tokens."""

    twins: Twins
    tl: Side
    ours: Side

    @property
    def family(self) -> str:
        return self.twins.family

    def both(self, check: Callable[[Side], Any]) -> Any:
        """``check(side)`` on TransformerLens's side, then on ours; the two results must be the same (values to
        1e-4, labels exactly). Returns our result."""
        theirs = check(self.tl)
        ours = check(self.ours)
        assert_same(theirs, ours)
        return ours

    same = staticmethod(Twins.same)


def assert_same(theirs, ours, where: str = "result") -> None:
    """TransformerLens's value and ours agree: tensors in shape and to ``ATOL``, strings/labels exactly, containers
    item by item."""
    if isinstance(theirs, Tensor):
        assert isinstance(ours, Tensor), f"{where}: TransformerLens gives a tensor, ours a {type(ours).__name__}"
        assert tuple(ours.shape) == tuple(theirs.shape), \
            f"{where}: shape {tuple(ours.shape)}, TransformerLens {tuple(theirs.shape)}"
        torch.testing.assert_close(ours.detach().to("cpu", theirs.dtype), theirs.detach().cpu(), atol=ATOL, rtol=0,
                                   msg=lambda m: f"{where}: {m}")
    elif isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)), f"{where}: TransformerLens gives a sequence, ours {ours!r}"
        assert len(ours) == len(theirs), f"{where}: {len(ours)} items, TransformerLens {len(theirs)}: {ours!r}"
        if all(isinstance(x, str) for x in theirs):
            assert list(ours) == list(theirs), f"{where}: labels {ours}, TransformerLens {theirs}"
            return
        for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{where}: keys {sorted(ours)}, TransformerLens {sorted(theirs)}"
        for k in theirs:
            assert_same(theirs[k], ours[k], f"{where}[{k!r}]")
    else:
        assert ours == theirs, f"{where}: {ours!r}, TransformerLens {theirs!r}"


# ------------------------------------------------------------------------------------------------ building the twins
def _save_tiny(family: str, root: Path) -> Path:
    """A tiny ``family`` model saved in ``root``, its 1-D parameters moved off HF's initial ones and zeros.

    GPT-2's config also records ``n_ctx`` (= ``n_positions``, as hub GPT-2 configs do): TransformerLens 3.9's mapping
    reads ``hf_config.n_ctx`` (loading_from_pretrained.py:505), which transformers 5 no longer provides."""
    import transformers

    from interp.testing import make_tiny, tiny_config

    overrides = {"n_ctx": tiny_config("gpt2").n_positions} if family == "gpt2" else {}
    path = make_tiny(family, root, **overrides)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in hf.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    hf.save_pretrained(path)
    return path


def _tl_twin(family: str, path: Path, hf, tokenizer, fold: bool):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    # a fresh config per twin: load_and_process_state_dict(fold_ln=True) turns its normalization_type into LNPre/RMSPre
    cfg = HookedTransformerConfig(**convert_hf_model_config(str(path)), dtype=torch.float32, device="cpu")
    with warnings.catch_warnings():  # "HookedTransformer is deprecated and will be removed in 4.0"
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(cfg, tokenizer=tokenizer)
    convert = {"gpt2": convert_gpt2_weights, "llama": convert_llama_weights}[family]
    # cloned: the converters hand out HF's own parameters, and folding must not touch those
    state = {k: v.detach().clone() for k, v in convert(hf, tl.cfg).items()}
    tl.load_and_process_state_dict(state, fold_ln=fold, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False, refactor_factored_attn_matrices=False)
    return tl.eval()


def _build(family: str, root: Path) -> Twins:
    import transformers

    path = _save_tiny(family, root)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(4, 100, (BATCH, POS), generator=gen)  # ids 4..99 are characters (interp.testing)
    return Twins(family, path, hf, interp.load_model(path), _tl_twin(family, path, hf, tokenizer, True),
                 _tl_twin(family, path, hf, tokenizer, False), tokens)


@pytest.fixture(scope="session")
def _all_twins(tmp_path_factory):
    built: dict[str, Twins] = {}

    def get(family: str) -> Twins:
        if family not in built:
            # the folder name must not contain "llama" or "gemma": TransformerLens then picks the architecture from
            # the name and never reads config.json (loading_from_pretrained.py:168)
            built[family] = _build(family, tmp_path_factory.mktemp("tl_twin"))
        return built[family]

    return get


@pytest.fixture(params=FAMILIES)
def twins(request, _all_twins) -> Twins:
    return _all_twins(request.param)


@pytest.fixture
def pair(twins) -> Pair:
    """The folded TransformerLens twin and ours, with fresh caches of the shared ``[3, 8]`` tokens."""
    return twins.pair()


@pytest.fixture
def unfolded_pair(twins) -> Pair:
    """The unfolded TransformerLens twin and ours."""
    return twins.pair(flavour="unfolded")


@pytest.fixture
def single_pair(twins) -> Pair:
    """Folded twin and ours on one row of tokens (batch 1), for ``remove_batch_dim``."""
    return twins.pair(twins.tokens[:1])
