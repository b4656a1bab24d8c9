"""``train(config) -> TrainResult``: train an SAE on one hook site with Adam, atomic checkpoints and exact resume.

One step (the protocol of ``interp.saes.base``): take this rank's share of the global batch from the
``ActivationStore``, ``loss = sae.training_forward(x, dead_mask).loss``, backward, average gradients over ranks,
stop with ``NonFiniteError`` if the loss or a gradient is nan/inf (the last good checkpoint stays), optionally clip,
``sae.before_step()``, ``optimizer.step()``, ``sae.after_step()``, then update the dead-latent counters
(tokens since each latent last fired anywhere in the global batch; a latent is dead after ``dead_window``).

Resume restores the SAE, Adam, the store (buffer, generator, position), the dead-latent counters and the torch
RNG from the latest checkpoint, so on CPU a resumed run ends with weights ``torch.equal`` to an uninterrupted one.
The learning rate is a pure function of the step (``TrainConfig.lr_at``), so the schedule needs no state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.saes import distributed as D
from interp.saes.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    prepare_checkpoint_dir,
    save_checkpoint,
)
from interp.saes.config import TrainConfig
from interp.saes.store import (
    ActivationStore,
    CachedActivations,
    ModelActivations,
    load_tokens,
    rows_needed,
    write_activation_cache,
)

__all__ = ["NonFiniteError", "TrainResult", "build_store", "train"]

EXIT_AFTER_ENV = "INTERP_SAE_TEST_EXIT_AFTER_STEP"
"""Test-only: when set to N, the process calls ``os._exit(86)`` right after step N (simulates a crash)."""


class NonFiniteError(FloatingPointError):
    """Training produced a nan/inf loss or gradient."""


@dataclass
class TrainResult:
    """What ``train`` returns."""

    sae: Any
    """The trained SAE (in eval mode)."""
    config: TrainConfig
    """The configuration it was trained with."""
    steps: int
    """Optimizer steps completed (including those before a resume)."""
    history: list[dict[str, float]]
    """Metrics every ``log_every`` steps: step, lr, loss, mse, fvu, l0, dead_fraction, ..."""
    checkpoint: Path | None
    """Final checkpoint folder (its ``sae/`` subfolder loads with ``interp.saes.load``), or None."""


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _config_tokens(config: TrainConfig, model) -> Tensor:
    toks = load_tokens(config.dataset, model.tokenizer, config.context_length)
    return toks[: config.max_sequences] if config.max_sequences is not None else toks


def _write_cache(config: TrainConfig, model, cache: Path) -> None:
    """Cache the activations a run needs: all of ``rows_needed``, at most one pass over the token source."""
    toks = _config_tokens(config, model)
    src = ModelActivations(model, config.site, toks, model_batch_size=config.model_batch_size,
                           skip_special=config.skip_special)
    available = int((~torch.isin(toks, src.special.to(toks.device))).sum())
    need = min(rows_needed(config.batch_size, config.n_steps, config.buffer_batches), available)
    write_activation_cache(src, cache, need, progress=config.progress, meta={
        "model": config.model, "site": config.site, "context_length": config.context_length,
        "n_sequences": int(toks.shape[0]), "skip_special": config.skip_special})


def build_store(config: TrainConfig, info: D.DistInfo, model=None) -> ActivationStore:
    """The activation store a config describes (writing the activation cache first if it is missing)."""
    if config.model is None and config.activations is None:
        raise ValueError("give model (with dataset) or activations (a cached-activation folder), or pass a store "
                         "to train(); got none of them")
    kw = dict(batch_size=config.batch_size, buffer_batches=config.buffer_batches, seed=config.seed, rank=info.rank,
              world_size=info.world_size, dtype=_dtype(config.dtype), device=info.device)
    cache = Path(config.activations) if config.activations else None
    if cache is not None and not (cache / "activations.json").is_file():
        if model is None:
            raise FileNotFoundError(f"activations: {cache} holds no cached activations and no model is given")
        if info.is_main:
            _write_cache(config, model, cache)
        D.barrier(info)
    if cache is not None:
        src = CachedActivations(cache)
        if src.site is not None and src.site != config.site:
            raise ValueError(f"activations: {cache} caches site {src.site!r} but the config trains site "
                             f"{config.site!r}")
        cached_model = src.meta.get("model")
        if cached_model is not None and config.model is not None and cached_model != config.model:
            raise ValueError(f"activations: {cache} caches model {cached_model!r} but the config names model "
                             f"{config.model!r}")
        if model is not None:
            width = ModelActivations(model, config.site, torch.ones(1, 2, dtype=torch.long)).d_in
            if width != src.d_in:
                raise ValueError(f"d_in mismatch: cached activations have d_in={src.d_in} but site "
                                 f"{config.site!r} of the model has d_in={width}")
        return ActivationStore(src, **kw)
    return ActivationStore.from_model(model, config.site, _config_tokens(config, model),
                                      context_length=config.context_length, model_batch_size=config.model_batch_size,
                                      skip_special=config.skip_special, **kw)


def _load_model(config: TrainConfig, info: D.DistInfo):
    if config.model is None or (config.activations and (Path(config.activations) / "activations.json").is_file()):
        return None
    from interp.models import load_model

    return load_model(config.model, dtype=_dtype(config.model_dtype), device=info.device)


class _Run:
    """The mutable state of one training run (SAE, optimizer, store, counters) and its step."""

    def __init__(self, config: TrainConfig, info: D.DistInfo, store: ActivationStore) -> None:
        from interp.saes import build_sae

        self.config, self.info, self.store = config, info, store
        torch.manual_seed(config.seed)
        self.sae = build_sae(config.architecture, store.d_in, config.d_sae, **config.sae_hyperparameters())
        self.sae.to(device=info.device, dtype=_dtype(config.dtype)).train()
        self.params = list(self.sae.parameters())
        self.opt = torch.optim.Adam(self.params, lr=config.lr, betas=config.adam_betas)
        self.since_fired = torch.zeros(config.d_sae, dtype=torch.long, device=info.device)
        self.step, self.history, self.last_checkpoint = 0, [], None
        self.saved_step: int | None = None  # step of the last checkpoint, known on every rank (only rank 0 writes)

    def fresh_start(self) -> None:
        if self.config.b_dec_init is not None:
            try:
                sample = self.store.sample(self.config.batch_size)
            except ValueError as e:
                raise ValueError(f"step 0 (initialising b_dec): {e}") from e
            self.sae.init_b_dec(sample, method=self.config.b_dec_init)
        D.broadcast_module(self.sae, self.info)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        opt_t, opt_meta = optimizer_to_flat(self.opt)
        store_t, store_meta = self.store.state_dict()
        tensors.update(opt_t)
        tensors.update({f"store.{k}": v for k, v in store_t.items()})
        tensors["dead.since_fired"] = self.since_fired
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.info.device.startswith("cuda"):
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.info.device)
        meta = {"config": self.config.to_dict(), "optimizer": opt_meta, "store": store_meta,
                "history": self.history, "world_size": self.info.world_size}
        return tensors, meta

    def save(self) -> None:
        if self.info.is_main:
            tensors, meta = self.state()
            self.last_checkpoint = save_checkpoint(self.config.checkpoint_dir, self.step, tensors, meta, sae=self.sae)
        self.saved_step = self.step
        D.barrier(self.info)

    def restore(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path)
        old = TrainConfig.from_dict(meta["config"])
        diffs = self.config.differences(old)
        if diffs:
            lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (b, a) in diffs.items())
            raise ValueError(f"refusing to resume from {path}: it was made with another config ({lines})")
        if self.store.partitioned and meta["world_size"] != self.info.world_size:
            raise ValueError(f"refusing to resume from {path}: it was made with world_size={meta['world_size']}, "
                             f"this run has {self.info.world_size} (model-fed stores are split per rank)")
        self.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        optimizer_from_flat(self.opt, tensors, meta["optimizer"])
        self.store.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("store.")}, meta["store"])
        self.since_fired = tensors["dead.since_fired"].to(self.info.device)
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.info.device.startswith("cuda"):
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.info.device)
        self.step, self.history, self.last_checkpoint = int(meta["step"]), list(meta["history"]), path
        self.saved_step = self.step

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Tensor]:
        cfg, step = self.config, self.step
        lr = cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        try:
            x = self.store.next_batch()
        except ValueError as e:
            raise ValueError(f"step {step}: {e}") from e
        dead = self.since_fired >= cfg.dead_window
        out = self.sae.training_forward(x, dead_mask=dead)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        D.average_gradients(self.params, self.info)
        names = sorted(out.metrics)
        values = torch.stack([out.loss.detach(), *(out.metrics[n].detach().float() for n in names)]).float()
        values = D.all_mean(values, self.info)
        self._check_finite(values[0], "loss")
        if not all(torch.isfinite(p.grad).all() for p in self.params if p.grad is not None):
            self._check_finite(torch.tensor(float("nan")), "gradient")
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.sae.before_step()
        self.opt.step()
        self.sae.after_step()
        fired = D.all_any(out.fired, self.info)
        self.since_fired += cfg.batch_size
        self.since_fired[fired] = 0
        self.step += 1
        metrics = dict(zip(["loss", *names], values))
        metrics["dead_fraction"] = (self.since_fired >= cfg.dead_window).float().mean()
        metrics["lr"] = torch.tensor(lr)
        return metrics

    def _check_finite(self, value: Tensor, what: str) -> None:
        if not torch.isfinite(value):
            where = self.last_checkpoint or "none (no checkpoint written yet)"
            raise NonFiniteError(f"non-finite {what} ({float(value)}) at step {self.step}; training stopped. "
                                 f"The last good checkpoint is {where}")


def train(config: TrainConfig, *, model=None, store: ActivationStore | None = None) -> TrainResult:
    """Train an SAE as ``config`` describes; see the module docstring.

    ``model`` (a ``HookedModel``) saves loading ``config.model`` again; ``store`` replaces the store built from
    the config (e.g. ``ActivationStore.from_tensor(acts, ...)``: an in-memory source).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    from tqdm.auto import tqdm

    info = D.setup(config.device)
    completed = False
    try:
        if config.checkpoint_dir and info.is_main:
            prepare_checkpoint_dir(config.checkpoint_dir)  # removes what killed checkpoint writes left behind
        latest = latest_checkpoint(config.checkpoint_dir) if config.checkpoint_dir else None
        if latest is not None and not config.resume:  # checked before any model is loaded
            raise FileExistsError(f"checkpoint_dir {config.checkpoint_dir} already holds a checkpoint ({latest.name}); "
                                  "pass resume=True (--resume) to continue it, or choose an empty folder")
        if store is None:
            model = model if model is not None else _load_model(config, info)
            store = build_store(config, info, model)
        run = _Run(config, info, store)
        if latest is not None:
            run.restore(latest)
        else:
            run.fresh_start()
        exit_after = int(os.environ.get(EXIT_AFTER_ENV, "-1"))
        bar = tqdm(total=config.n_steps, initial=run.step, desc="train SAE", unit="step",
                   disable=not (config.progress and info.is_main))
        while run.step < config.n_steps:
            metrics = run.train_step()
            if run.step % config.log_every == 0 or run.step == config.n_steps:
                row = {"step": run.step, **{k: float(v) for k, v in metrics.items()}}
                run.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}", l0=f"{row.get('l0', float('nan')):.1f}",
                                fvu=f"{row.get('fvu', float('nan')):.3f}", dead=f"{row['dead_fraction']:.2f}")
            bar.update(1)
            if config.checkpoint_dir and config.checkpoint_every and run.step % config.checkpoint_every == 0:
                run.save()
            if run.step == exit_after:
                os._exit(86)
        bar.close()
        # ``saved_step`` (not ``last_checkpoint``, which only rank 0 sets) so that every rank makes the same choice:
        # save() ends in a barrier that all ranks must enter.
        if config.checkpoint_dir and run.saved_step != run.step:
            run.save()
        run.sae.eval()
        completed = True
        return TrainResult(run.sae, config, run.step, run.history, run.last_checkpoint)
    finally:
        D.teardown(info, completed=completed)
