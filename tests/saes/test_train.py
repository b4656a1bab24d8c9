"""The trainer: config validation, schedule, learning, checkpoints, NaN guard, refusal to resume, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import interp
from interp.saes.checkpoint import latest_checkpoint, load_checkpoint
from interp.saes.cli import config_from_args, main, register
from interp.saes.config import TrainConfig
from interp.saes.store import ActivationStore, TensorActivations, write_activation_cache
from interp.saes.train import NonFiniteError, train


def _sparse_data(n: int = 4096, d: int = 16, n_feat: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_feat, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, n_feat, generator=g) < 0.06) * torch.rand(n, n_feat, generator=g) * 4
    return codes @ dictionary + 0.3


def _cfg(**kw) -> TrainConfig:
    base = dict(site="blocks.0.hook_resid_post", d_sae=64, k=4, steps=30, batch_size=128,
                buffer_batches=4, lr=4e-3, log_every=5, progress=False)
    return TrainConfig(**{**base, **kw})


def _store(x: torch.Tensor, cfg: TrainConfig) -> ActivationStore:
    return ActivationStore.from_tensor(x, batch_size=cfg.batch_size, buffer_batches=cfg.buffer_batches, seed=cfg.seed)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kw, match", [
    (dict(architecture="gated"), "architecture must be one of"),
    (dict(k=64), "k must be smaller than d_sae"),
    (dict(steps=None), "steps or total_tokens"),
    (dict(total_tokens=10**6), "not both"),
    (dict(decay="exp"), "decay must be one of"),
    (dict(model="m", activations=None), "dataset is None"),
    (dict(resume=True), "resume=True needs checkpoint_dir"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(dtype="float8"), "dtype must be one of"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_config_round_trips_and_reports_differences():
    cfg = _cfg(adam_betas=(0.8, 0.99), sae_kwargs={"aux_coefficient": 0.1})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    other = _cfg(lr=1e-3, progress=True)
    assert cfg.differences(other) == {"lr": (4e-3, 1e-3), "adam_betas": ([0.8, 0.99], [0.9, 0.999]),
                                      "sae_kwargs": ({"aux_coefficient": 0.1}, {})}
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_lr_schedule():
    cfg = _cfg(steps=100, warmup_steps=10, decay="linear", decay_start=0.5, lr=1.0, lr_end=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(30) == 1.0 and cfg.lr_at(99) == pytest.approx(0.1)
    assert cfg.lr_at(74) == pytest.approx(1.0 - 0.9 * 25 / 50)
    cos = _cfg(steps=100, decay="cosine", lr=1.0, lr_end=0.0)
    assert cos.lr_at(49) == pytest.approx(0.5) and cos.lr_at(99) == pytest.approx(0.0, abs=1e-12)
    assert _cfg(steps=None, total_tokens=128 * 7 + 5).n_steps == 7


# ------------------------------------------------------------------------------------------------ training
def test_training_learns_and_checkpoints(tmp_path):
    from interp.saes import load

    x = _sparse_data()
    cfg = _cfg(steps=40, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=15)
    result = train(cfg, store=_store(x, cfg))
    hist = result.history
    assert [h["step"] for h in hist] == list(range(5, 41, 5))
    assert hist[-1]["fvu"] < 0.5 * hist[0]["fvu"] and hist[-1]["l0"] <= 4
    assert result.steps == 40 and result.checkpoint.name == "step_00000040"
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["latest.json", "step_00000030", "step_00000040"]  # keeps the newest two
    assert latest_checkpoint(tmp_path / "ck") == result.checkpoint
    tensors, meta = load_checkpoint(result.checkpoint)
    assert meta["step"] == 40 and TrainConfig.from_dict(meta["config"]) == cfg
    assert tensors["rng.cpu"].dtype == torch.uint8 and "optim.0.exp_avg" in tensors
    loaded = load(result.checkpoint / "sae")
    for name, p in result.sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p)
    # the SAE reconstructs held-out data from the same dictionary
    test = _sparse_data(seed=0)[:512]
    err = (result.sae(test).x_hat - test).pow(2).sum() / (test - test.mean(0)).pow(2).sum()
    assert err < 0.6


def test_trains_from_a_tiny_model_site(tiny_dir, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Document {i}: the cat sat on mat number {i * 7 % 13}." for i in range(60)))
    cfg = TrainConfig(site="blocks.1.hook_resid_post", d_sae=96, k=6, model=str(tiny_dir("llama")),
                      dataset=str(text), context_length=32, model_batch_size=4, batch_size=64, buffer_batches=4,
                      steps=20, lr=3e-3, log_every=10, progress=False)
    result = train(cfg)
    assert result.sae.cfg.d_in == 64 and result.steps == 20
    assert result.history[-1]["fvu"] < result.history[0]["fvu"] and result.history[-1]["l0"] <= 6


def test_activation_cache_is_written_then_reused(tiny_dir, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Line {i} says hello to {i % 5} friends." for i in range(40)))
    common = dict(site="blocks.0.hook_resid_post", d_sae=80, k=4, dataset=str(text), context_length=24,
                  batch_size=32, buffer_batches=2, steps=5, progress=False, activations=str(tmp_path / "acts"))
    first = train(TrainConfig(model=str(tiny_dir("llama")), **common))
    meta = json.loads((tmp_path / "acts" / "activations.json").read_text())
    assert meta["site"] == common["site"] and meta["n_rows"] == 32 * 7 and meta["d_in"] == 64
    second = train(TrainConfig(model=None, **{**common, "dataset": None}))  # no model: reads the cache
    for name, p in first.sae.state_dict().items():
        assert torch.equal(second.sae.state_dict()[name], p)
    with pytest.raises(ValueError, match="caches site 'blocks.0.hook_resid_post'.*'blocks.1.hook_resid_post'"):
        train(TrainConfig(model=None, **{**common, "dataset": None, "site": "blocks.1.hook_resid_post"}))
    with pytest.raises(ValueError, match="caches model .* but the config names model 'other'"):
        train(TrainConfig(model="other", **common))


def test_activation_cache_holds_at_most_one_pass_over_the_tokens(tiny_dir, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Short line {i}." for i in range(40)))
    cfg = TrainConfig(site="blocks.0.hook_resid_post", d_sae=80, k=4, model=str(tiny_dir("llama")),
                      dataset=str(text), max_sequences=2, context_length=24, batch_size=32, buffer_batches=2,
                      steps=5, progress=False, activations=str(tmp_path / "acts"))
    result = train(cfg)
    meta = json.loads((tmp_path / "acts" / "activations.json").read_text())
    assert meta["n_sequences"] == 2 and 0 < meta["n_rows"] <= 2 * 23 < 32 * 7  # capped; training cycles over it
    assert result.steps == 5


def test_bad_sources(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="give model .* or activations"):
        train(_cfg())
    write_activation_cache(torch.randn(300, 16), tmp_path / "acts16", 300, progress=False)
    cfg = _cfg(model=str(tiny_dir("llama")), dataset="unused.txt", activations=str(tmp_path / "acts16"))
    model = interp.load_model(cfg.model)
    with pytest.raises(ValueError, match=r"d_in mismatch: cached activations have d_in=16 but site "
                                         r"'blocks.0.hook_resid_post' of the model has d_in=64"):
        train(cfg, model=model)


class _PoisonedStore(ActivationStore):
    """Finite activations so large that the squared error overflows from ``poison_at`` on."""

    poison_at = 3

    def next_batch(self):
        self.served = getattr(self, "served", 0) + 1
        x = super().next_batch()
        return x * 1e30 if self.served > self.poison_at else x


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    x = _sparse_data(1024)
    cfg = _cfg(steps=10, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=1)
    store = _PoisonedStore(_store(x, cfg).source, batch_size=128, buffer_batches=4)
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at step 3;.*step_00000003"):
        train(cfg, store=store)
    good = latest_checkpoint(tmp_path / "ck")
    assert good.name == "step_00000003"
    tensors, _ = load_checkpoint(good)
    assert all(torch.isfinite(t.float()).all() for t in tensors.values())


def test_non_finite_activations_stop_training():
    x = _sparse_data(1024)
    x[300, 1] = float("inf")
    cfg = _cfg(steps=10)
    with pytest.raises(ValueError, match=r"step 0 .*non-finite activations"):
        train(cfg, store=_store(x, cfg))
    x = _sparse_data(1024)
    x[1000, 1] = float("nan")  # read by a later refill
    store = ActivationStore(TensorActivations(x, chunk_rows=128), batch_size=128, buffer_batches=4)
    with pytest.raises(ValueError, match=r"step \d+: non-finite activations \(nan/inf\) in 1 rows .*first: row 1000"):
        train(cfg, store=store)


def test_resume_refuses_another_config_and_existing_dir_without_resume(tmp_path):
    x = _sparse_data(1024)
    cfg = _cfg(steps=4, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=2)
    train(cfg, store=_store(x, cfg))
    with pytest.raises(FileExistsError, match="resume=True"):
        train(cfg, store=_store(x, cfg))
    other = _cfg(steps=4, lr=1e-3, k=5, checkpoint_dir=str(tmp_path / "ck"), resume=True)
    with pytest.raises(ValueError, match=r"another config \(.*k: checkpoint 4 vs now 5.*"
                                         r"lr: checkpoint 0.004 vs now 0.001"):
        train(other, store=_store(x, other))


def test_resume_in_process_matches_uninterrupted(tmp_path):
    x = _sparse_data(2048)
    full_cfg = _cfg(steps=12, checkpoint_dir=str(tmp_path / "full"))
    full = train(full_cfg, store=_store(x, full_cfg))
    part_cfg = _cfg(steps=12, checkpoint_dir=str(tmp_path / "part"), checkpoint_every=5)
    store = _store(x, part_cfg)
    store.next_batch = _crash_after(store.next_batch, 7)  # dies in step 7: checkpoint 5 is the latest
    with pytest.raises(KeyboardInterrupt):
        train(part_cfg, store=store)
    assert latest_checkpoint(tmp_path / "part").name == "step_00000005"
    resumed_cfg = _cfg(steps=12, checkpoint_dir=str(tmp_path / "part"), checkpoint_every=5, resume=True)
    resumed = train(resumed_cfg, store=_store(x, resumed_cfg))
    assert resumed.steps == 12
    for name, p in full.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], p), name
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def _crash_after(fn, n):
    calls = []

    def wrapped():
        calls.append(1)
        if len(calls) > n:
            raise KeyboardInterrupt
        return fn()
    return wrapped


@pytest.mark.parametrize("arch, kw", [("relu", {"l1_coefficient": 1.0}), ("batchtopk", {}), ("jumprelu", {})])
def test_other_architectures_train(arch, kw):
    x = _sparse_data(1024)
    cfg = _cfg(architecture=arch, steps=6, **kw)
    result = train(cfg, store=_store(x, cfg))
    assert result.sae.cfg.architecture == arch and all(math.isfinite(h["loss"]) for h in result.history)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_checkpoints_and_resumes_on_cuda(tmp_path):
    x = _sparse_data(2048)
    cfg = _cfg(steps=12, device="cuda", checkpoint_dir=str(tmp_path / "full"))
    full = train(cfg, store=ActivationStore.from_tensor(x, batch_size=128, buffer_batches=4, device="cuda"))
    assert full.sae.W_enc.device.type == "cuda" and full.history[-1]["fvu"] < full.history[0]["fvu"]
    part = _cfg(steps=12, device="cuda", checkpoint_dir=str(tmp_path / "part"), checkpoint_every=5)
    store = ActivationStore.from_tensor(x, batch_size=128, buffer_batches=4, device="cuda")
    store.next_batch = _crash_after(store.next_batch, 7)
    with pytest.raises(KeyboardInterrupt):
        train(part, store=store)
    resumed = train(_cfg(steps=12, device="cuda", checkpoint_dir=str(tmp_path / "part"), checkpoint_every=5,
                         resume=True), store=ActivationStore.from_tensor(x, batch_size=128, buffer_batches=4,
                                                                         device="cuda"))
    for name, p in full.sae.state_dict().items():  # GPU kernels may use atomics: close, not necessarily equal
        torch.testing.assert_close(resumed.sae.state_dict()[name], p, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_flags_map_one_to_one_onto_train_config(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="interp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sae", "train", "--site", "s", "--d-sae", "64", "--activations", "a", "--steps", "3",
                              "--k", "8", "--no-skip-special", "--adam-betas", "0.8", "0.95", "--sae-kwargs",
                              '{"aux_coefficient": 0.5}', "--l1-coefficient", "none"])
    cfg = config_from_args(args)
    assert cfg == TrainConfig(site="s", d_sae=64, activations="a", steps=3, k=8, skip_special=False,
                              adam_betas=(0.8, 0.95), sae_kwargs={"aux_coefficient": 0.5})
    with pytest.raises(SystemExit):
        main(["sae", "train", "--help"])
    out = capsys.readouterr().out
    import dataclasses

    from interp.saes.config import field_docs

    assert set(field_docs(TrainConfig)) == {f.name for f in dataclasses.fields(TrainConfig)}  # every field documented
    assert "{topk,batchtopk,relu,jumprelu}" in out
    assert "Shuffle buffer size in batches" in out and "--dead-window" in out and "--no-progress" in out

    write_activation_cache(_sparse_data(1024), tmp_path / "acts", 1024, progress=False)
    assert main(["sae", "train", "--site", "x", "--d-sae", "32", "--k", "4", "--activations", str(tmp_path / "acts"),
                 "--steps", "3", "--batch-size", "64", "--buffer-batches", "2", "--no-progress",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["checkpoint"].endswith("step_00000003")
