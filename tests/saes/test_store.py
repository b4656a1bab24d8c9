"""ActivationStore, token sources and the activation cache."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import interp
from interp.saes.store import (
    ActivationStore,
    CachedActivations,
    ModelActivations,
    load_tokens,
    site_activations,
    write_activation_cache,
)

SITE = "blocks.0.hook_resid_post"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs!",
         "Sphinx of black quartz, judge my vow; 12345 and 67890."] * 4


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


def _rows(n: int, d: int = 6) -> torch.Tensor:
    x = torch.randn(n, d)
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # row id
    return x


# ------------------------------------------------------------------------------------------------ tokens
def test_pack_texts_rows_start_with_bos_and_join_with_eos(llama):
    tok = llama.tokenizer
    rows = load_tokens(TEXTS, tok, context_length=16)
    assert rows.dtype == torch.long and rows.shape[1] == 16
    assert (rows[:, 0] == tok.bos_token_id).all()
    stream = rows[:, 1:].reshape(-1).tolist()
    expected = []
    for t in TEXTS:
        expected += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert stream == expected[: len(stream)]
    assert len(expected) - len(stream) < 15


def test_token_files_and_tensors(llama, tmp_path):
    flat = torch.randint(3, 100, (1000,))
    save_file({"tokens": flat}, tmp_path / "flat.safetensors")
    rows = load_tokens(str(tmp_path / "flat.safetensors"), llama.tokenizer, 64)
    assert torch.equal(rows, flat[: 15 * 64].view(15, 64))
    two_d = torch.randint(3, 100, (4, 130))
    assert torch.equal(load_tokens(two_d, None, 64), two_d[:, :128].reshape(8, 64))
    (tmp_path / "c.txt").write_text("\n\n".join(TEXTS))
    assert torch.equal(load_tokens(tmp_path / "c.txt", llama.tokenizer, 16), load_tokens(TEXTS, llama.tokenizer, 16))
    save_file({"ids": flat}, tmp_path / "bad.safetensors")
    with pytest.raises(KeyError, match="'tokens'"):
        load_tokens(str(tmp_path / "bad.safetensors"), None, 64)
    with pytest.raises(FileNotFoundError, match="dataset"):
        load_tokens(str(tmp_path / "missing.txt"), llama.tokenizer, 64)
    with pytest.raises(ValueError, match="no context"):
        load_tokens(torch.arange(10), None, 64)


# ------------------------------------------------------------------------------------------------ buffer
def test_shuffling_buffer_serves_each_row_once_per_epoch_and_is_seeded():
    x = _rows(1000)
    store = ActivationStore.from_tensor(x, batch_size=10, buffer_batches=4, seed=1)
    served = torch.cat([store.next_batch() for _ in range(90)])
    ids = served[:, 0].long()
    assert ids.unique().numel() == 900  # no row twice within the first epoch
    assert not torch.equal(ids, ids.sort().values)  # shuffled
    assert torch.equal(served, x[ids])  # rows intact
    again = ActivationStore.from_tensor(x, batch_size=10, buffer_batches=4, seed=1)
    assert torch.equal(torch.cat([again.next_batch() for _ in range(90)]), served)
    other = ActivationStore.from_tensor(x, batch_size=10, buffer_batches=4, seed=2)
    assert not torch.equal(torch.cat([other.next_batch() for _ in range(90)]), served)


def test_state_dict_round_trip_continues_identically():
    x = _rows(500)
    a = ActivationStore.from_tensor(x, batch_size=16, buffer_batches=3, seed=0)
    for _ in range(7):
        a.next_batch()
    tensors, meta = a.state_dict()
    expected = [a.next_batch() for _ in range(20)]
    b = ActivationStore.from_tensor(x, batch_size=16, buffer_batches=3, seed=123)
    b.load_state_dict(tensors, meta)
    assert all(torch.equal(e, b.next_batch()) for e in expected)


def test_world_size_slices_partition_the_global_batch():
    x = _rows(300)
    full = ActivationStore.from_tensor(x, batch_size=12, buffer_batches=4, seed=5)
    parts = [ActivationStore.from_tensor(x, batch_size=12, buffer_batches=4, seed=5, rank=r, world_size=3)
             for r in range(3)]
    for _ in range(10):
        assert torch.equal(full.next_batch(), torch.cat([p.next_batch() for p in parts]))


def test_non_finite_activations_raise():
    x = _rows(64)
    x[40, 2] = float("nan")
    store = ActivationStore.from_tensor(x, batch_size=8, buffer_batches=2, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        for _ in range(10):
            store.next_batch()


def test_cache_round_trip_matches_tensor_source(tmp_path):
    x = _rows(700)
    write_activation_cache(x, tmp_path / "cache", 650, shard_rows=200, progress=False)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == ["activations.json"] + [f"shard_0000{i}.safetensors" for i in range(4)]  # no temp files left
    src = CachedActivations(tmp_path / "cache")
    assert src.n_rows == 650 and src.sizes == [200, 200, 200, 50]
    a = ActivationStore.from_cache(tmp_path / "cache", batch_size=32, buffer_batches=4, seed=3)
    b = ActivationStore.from_tensor(x[:650], batch_size=32, buffer_batches=4, seed=3)
    for _ in range(40):  # past one epoch: both cycle
        assert torch.equal(a.next_batch(), b.next_batch())


def test_incomplete_cache_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="activations.json"):
        CachedActivations(tmp_path / "c")


# ------------------------------------------------------------------------------------------------ model source
def test_model_source_matches_run_with_cache_and_skips_special(llama):
    toks = load_tokens(TEXTS, llama.tokenizer, 24)
    src = ModelActivations(llama, SITE, toks, model_batch_size=3, skip_special=True)
    got = src.read()
    _, cache = llama.run_with_cache(toks[:3], names_filter=[SITE])
    specials = torch.tensor([llama.tokenizer.bos_token_id, llama.tokenizer.eos_token_id, llama.tokenizer.pad_token_id])
    keep = ~torch.isin(toks[:3], specials)
    assert torch.equal(got, cache[SITE][keep])
    assert got.shape == (int(keep.sum()), llama.d_model) and keep.sum() < keep.numel()
    assert src.state() == {"kind": "model", "next_seq": 3}


def test_early_stop_skips_later_layers_and_cleans_up(llama):
    calls = []
    toks = torch.randint(4, 100, (2, 10))
    with llama.hooks([("blocks.1.hook_resid_post", lambda a, hook: calls.append(hook.name))]):
        acts = site_activations(llama, SITE, toks)
    assert calls == [] and not llama._registry
    _, cache = llama.run_with_cache(toks, names_filter=[SITE])
    assert torch.equal(acts, cache[SITE])
    assert llama(toks).shape == (2, 10, llama.d_vocab)  # model still works afterwards


def test_per_position_sites_are_flattened(llama):
    toks = torch.randint(4, 100, (2, 7))
    acts = site_activations(llama, "blocks.0.attn.hook_z", toks)
    _, cache = llama.run_with_cache(toks, names_filter=["blocks.0.attn.hook_z"])
    assert acts.shape == (2, 7, llama.n_heads * llama.d_head)
    assert torch.equal(acts, cache["blocks.0.attn.hook_z"].reshape(2, 7, -1))
    with pytest.raises(ValueError, match="per-position"):
        site_activations(llama, "blocks.0.attn.hook_pattern", toks)


@pytest.mark.filterwarnings("ignore:the token source")
def test_mamba_ssm_state_site_flattens_to_d_inner_times_d_state(tiny_dir):
    model = interp.load_model(str(tiny_dir("mamba")))
    site = "blocks.1.mixer.hook_ssm_state"
    if site not in model.site_names():
        pytest.skip("the Mamba model exposes no hook_ssm_state site yet")
    toks = torch.randint(4, 100, (2, 5))
    _, cache = model.run_with_cache(toks, names_filter=[site])
    full = cache[site]
    store = ActivationStore.from_model(model, site, toks, context_length=5, model_batch_size=2, skip_special=False,
                                       batch_size=4, buffer_batches=2)
    assert store.d_in == full[0, 0].numel() == full.shape[2] * full.shape[3]
    rows = torch.cat([store.next_batch() for _ in range(2)])
    ref = full.reshape(10, -1)
    assert all((ref == r).all(-1).any() for r in rows)
