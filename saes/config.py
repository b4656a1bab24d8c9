"""``TrainConfig``: everything one SAE training run depends on, as one frozen, validated dataclass.

The CLI verb ``interp sae train`` maps 1:1 onto these fields (flags are generated from them, help text from
the per-field docstrings), and a checkpoint stores ``to_dict()`` so that a resume can refuse a different config.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

__all__ = ["RESUME_IGNORED", "TrainConfig", "field_docs"]

ARCHITECTURES = ("topk", "batchtopk", "relu", "jumprelu")
DECAYS = ("constant", "linear", "cosine")
DTYPES = ("float32", "float64", "bfloat16", "float16")

RESUME_IGNORED = frozenset({"resume", "progress", "checkpoint_dir", "log_every", "device"})
"""Fields that may differ between a run and its resume (they do not change the numbers on one device)."""


@dataclass(frozen=True)
class TrainConfig:
    """One SAE training run (see ``interp.saes.train``)."""

    d_sae: int
    """Number of SAE latents (dictionary size)."""
    site: str | None = None
    """Hook site to train an SAE on, e.g. ``blocks.12.hook_resid_post`` (trailing dims of per-position sites are
    flattened, so ``blocks.3.mixer.hook_ssm_state`` gives d_in = d_inner * d_state). For a transcoder give
    site_in and site_out instead."""
    site_in: str | None = None
    """Transcoder: the site its encoder reads, e.g. ``blocks.3.ln2.hook_normalized`` (the MLP input); with
    site_out, this trains a TopK transcoder (architecture topk) instead of an SAE."""
    site_out: str | None = None
    """Transcoder: the site its decoder predicts and a splice replaces, e.g. ``blocks.3.hook_mlp_out``."""
    model: str | None = None
    """Model spec for ``interp.load_model`` (a local HF folder or ``smollm2``); None to train from
    ``activations`` only (or from a store passed to ``train``)."""
    dataset: str | None = None
    """Token source: a ``.txt`` file (one document per blank-line-separated block), a ``.safetensors`` file of
    ``tokens`` (LongTensor [n_seq, seq_len] or flat [n]), or ``builtin:stdlib-docs`` (docstrings of the Python
    standard library). Needed with ``model``."""
    activations: str | None = None
    """Folder of cached activations (safetensors shards written by ``write_activation_cache``). If it exists
    it is read instead of running the model; if it does not and ``model`` is set, it is written first (one pass
    over the token source at most; training cycles over the cache when it needs more tokens)."""
    architecture: str = field(default="topk", metadata={"choices": ARCHITECTURES})
    """SAE architecture: one of topk, batchtopk, relu, jumprelu."""
    k: int | None = 32
    """Active latents per token for topk / batchtopk (ignored by the others)."""
    l1_coefficient: float | None = None
    """relu: weight of the decoder-norm-weighted L1 penalty (None: the architecture's default)."""
    l0_coefficient: float | None = None
    """jumprelu: weight of the L0 penalty (None: the architecture's default)."""
    sae_kwargs: dict = field(default_factory=dict)
    """Other architecture hyper-parameters passed to ``build_sae`` (JSON object on the command line)."""
    b_dec_init: str | None = "mean"
    """How to initialise b_dec from the first buffer of activations (passed to ``sae.init_b_dec``); None keeps
    the SAE's own initialisation."""
    max_sequences: int | None = None
    """Use only the first this many sequences of the token source (None: all of it)."""
    context_length: int = 128
    """Tokens per sequence fed to the model."""
    model_batch_size: int = 8
    """Sequences per model forward pass when computing activations."""
    skip_special: bool = True
    """Drop activations at BOS / pad / EOS positions (they are outliers that waste capacity)."""
    batch_size: int = 4096
    """Activations per optimizer step (the global batch; split evenly over data-parallel ranks)."""
    buffer_batches: int = 8
    """Shuffle buffer size in batches: fill, permute with a seeded generator, serve half, refill."""
    steps: int | None = None
    """Optimizer steps; give this or ``total_tokens``."""
    total_tokens: int | None = None
    """Training tokens; ``steps = total_tokens // batch_size`` when ``steps`` is not given."""
    lr: float = 2e-4
    """Peak learning rate of Adam."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam (beta1, beta2)."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr`` over this many steps."""
    decay: str = field(default="constant", metadata={"choices": DECAYS})
    """Learning-rate schedule after warm-up: constant, linear or cosine (to ``lr_end``)."""
    decay_start: float = 0.0
    """Fraction of the steps after which the decay starts (e.g. 0.8 decays over the last 20 %)."""
    lr_end: float = 0.0
    """Final learning rate of the linear / cosine decay."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""
    dead_window: int = 1_000_000
    """A latent is dead once it has not fired for this many training tokens (fed to the SAE's auxiliary loss)."""
    seed: int = 0
    """Seed for SAE initialisation and the shuffling buffer."""
    checkpoint_dir: str | None = None
    """Folder for checkpoints and the final SAE (None: keep nothing on disk)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps (0: only at the end)."""
    resume: bool = False
    """Continue from the latest checkpoint in ``checkpoint_dir`` (it must come from the same config)."""
    device: str = "cpu"
    """Device for the SAE and the model (cpu, cuda, cuda:1, ...)."""
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    """SAE parameter dtype: float32, float64, bfloat16 or float16."""
    model_dtype: str = field(default="float32", metadata={"choices": DTYPES})
    """Dtype the model runs in when computing activations."""
    log_every: int = 10
    """Record metrics (and refresh the progress bar) every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar (rank 0 only)."""

    def __post_init__(self) -> None:
        if self.site_in is None and self.site_out is None:
            _check_str(self.site, "site")
        else:
            if self.site is not None:
                raise ValueError(f"give site (an SAE) or site_in and site_out (a transcoder), not both; got "
                                 f"site={self.site!r}, site_in={self.site_in!r}, site_out={self.site_out!r}")
            _check_str(self.site_in, "site_in")
            _check_str(self.site_out, "site_out")
            if self.architecture != "topk":
                raise ValueError(f"transcoders are TopK only: architecture must be 'topk' with site_in/site_out; "
                                 f"got {self.architecture!r}")
        _check_int(self.d_sae, "d_sae", lo=1)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {self.architecture!r}")
        if self.architecture in ("topk", "batchtopk"):
            _check_int(self.k, "k", lo=1)
            if self.k >= self.d_sae:
                raise ValueError(f"k must be smaller than d_sae; got k={self.k} >= d_sae={self.d_sae}")
        for name in ("l1_coefficient", "l0_coefficient"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if not isinstance(self.sae_kwargs, dict):
            raise TypeError(f"sae_kwargs must be a dict; got {type(self.sae_kwargs).__name__}")
        if self.model is not None and self.dataset is None and self.activations is None:
            raise ValueError("model is set but dataset is None; give a token source (a .txt or .safetensors path)")
        if self.max_sequences is not None:
            _check_int(self.max_sequences, "max_sequences", lo=1)
        for name in ("context_length", "model_batch_size", "batch_size", "buffer_batches", "log_every"):
            _check_int(getattr(self, name), name, lo=1)
        if self.buffer_batches < 2:
            raise ValueError(f"buffer_batches must be >= 2 (half the buffer is served per refill); "
                             f"got {self.buffer_batches}")
        if self.steps is None and self.total_tokens is None:
            raise ValueError("give steps or total_tokens; got neither")
        if self.steps is not None and self.total_tokens is not None:
            raise ValueError(f"give steps or total_tokens, not both; got steps={self.steps}, "
                             f"total_tokens={self.total_tokens}")
        if self.steps is not None:
            _check_int(self.steps, "steps", lo=1)
        if self.total_tokens is not None:
            _check_int(self.total_tokens, "total_tokens", lo=self.batch_size)
        for name in ("lr", "lr_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if not (len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas)):
            raise ValueError(f"adam_betas must be two numbers in [0, 1); got {self.adam_betas!r}")
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        _check_int(self.warmup_steps, "warmup_steps", lo=0)
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}; got {self.decay!r}")
        if not 0.0 <= self.decay_start < 1.0:
            raise ValueError(f"decay_start must be in [0, 1); got {self.decay_start!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None; got {self.max_grad_norm!r}")
        _check_int(self.dead_window, "dead_window", lo=1)
        _check_int(self.seed, "seed", lo=0)
        _check_int(self.checkpoint_every, "checkpoint_every", lo=0)
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (the folder holding the checkpoints)")
        for name in ("dtype", "model_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {DTYPES}; got {getattr(self, name)!r}")

    @property
    def is_transcoder(self) -> bool:
        """Whether this run trains a transcoder (site_in -> site_out) rather than an SAE."""
        return self.site_out is not None

    @property
    def sites(self) -> tuple[str, ...]:
        """The sites whose activations make a training row: ``(site,)``, or ``(site_in, site_out)``."""
        return (self.site_in, self.site_out) if self.is_transcoder else (self.site,)

    @property
    def sae_architecture(self) -> str:
        """The architecture ``build_sae`` gets: ``architecture``, or "topk_transcoder" for a transcoder."""
        return "topk_transcoder" if self.is_transcoder else self.architecture

    @property
    def n_steps(self) -> int:
        """The number of optimizer steps this run makes."""
        return self.steps if self.steps is not None else self.total_tokens // self.batch_size

    def lr_at(self, step: int) -> float:
        """Learning rate used for optimizer step ``step`` (0-based): warm-up, then constant / linear / cosine."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        start = max(self.warmup_steps, int(self.decay_start * self.n_steps))
        if self.decay == "constant" or step < start:
            return self.lr
        span = max(1, self.n_steps - start)
        frac = min(1.0, (step - start + 1) / span)
        if self.decay == "linear":
            return self.lr + (self.lr_end - self.lr) * frac
        return self.lr_end + 0.5 * (self.lr - self.lr_end) * (1 + math.cos(math.pi * frac))

    def sae_hyperparameters(self) -> dict[str, Any]:
        """Keyword arguments for ``build_sae`` (besides architecture, d_in, d_sae)."""
        kw = dict(self.sae_kwargs)
        if self.architecture in ("topk", "batchtopk"):
            kw.setdefault("k", self.k)
        if self.architecture == "relu" and self.l1_coefficient is not None:
            kw.setdefault("l1_coefficient", self.l1_coefficient)
        if self.architecture == "jumprelu" and self.l0_coefficient is not None:
            kw.setdefault("l0_coefficient", self.l0_coefficient)
        return kw

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known fields: {sorted(names)}")
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    def differences(self, other: TrainConfig, ignore: frozenset[str] = RESUME_IGNORED) -> dict[str, tuple]:
        """``{field: (self_value, other_value)}`` for the fields that differ (JSON-normalised)."""
        a, b = json.loads(json.dumps(self.to_dict())), json.loads(json.dumps(other.to_dict()))
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


def _check_int(value, name: str, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")


def _check_str(value, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string; got {value!r}")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from its source with ``ast``)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
