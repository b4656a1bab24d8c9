"""Bad inputs to SAEs: configs, inputs (dtype, width, device), files, activation stores, training and evaluation."""

import json

import torch

from interp import saes
from interp.models.memory import MemoryBudgetError
from interp.saes.checkpoint import latest_checkpoint, load_checkpoint
from interp.saes.config import TrainConfig
from interp.saes.store import (
    ActivationStore,
    CachedActivations,
    ModelActivations,
    TensorActivations,
    load_tokens,
    pack_texts,
    site_activations,
    write_activation_cache,
)

SITE = "blocks.1.hook_resid_post"
X = torch.randn(8, 64)


def _cfg(**kw):
    base = dict(site=SITE, d_sae=16, k=2, steps=2, batch_size=8, buffer_batches=2, progress=False)
    return TrainConfig(**{**base, **kw})


def _store(**kw):
    return ActivationStore.from_tensor(torch.randn(64, 8), **{"batch_size": 8, "buffer_batches": 2, **kw})


def _cache_dir(e, **index):
    folder = e.tmp / "acts"
    write_activation_cache(torch.randn(20, 8), folder, 20, progress=False)
    if index:
        (folder / "activations.json").write_text(json.dumps(index) if not isinstance(index.get("raw"), str)
                                                 else index["raw"])
    return folder


def _ckpt(e, **broken):
    root = e.tmp / "run"
    saes.train(_cfg(checkpoint_dir=str(root)), store=_store())
    for name, content in broken.items():
        path = latest_checkpoint(root) / name.replace("__", ".") if name != "latest__json" else root / "latest.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return root


def _diverge(e):
    x = torch.randn(64, 8) * 1e20  # squares overflow float32: the loss is inf at the first step
    return saes.train(_cfg(), store=ActivationStore.from_tensor(x, batch_size=8, buffer_batches=2))


ROWS = [
    # ---- SAE configs
    ("config-arch", lambda e: saes.SAEConfig("gated", 8, 16), ValueError,
     r"architecture must be one of \('topk', 'batchtopk', 'relu', 'jumprelu'\), got 'gated'"),
    ("config-d-in-zero", lambda e: saes.SAEConfig("topk", 0, 16, k=2, aux_coefficient=0.1), ValueError,
     r"d_in must be a positive int, got 0"),
    ("config-d-sae-float", lambda e: saes.SAEConfig("topk", 8, 16.0, k=2, aux_coefficient=0.1), ValueError,
     r"d_sae must be a positive int, got 16\.0"),
    ("config-k-missing", lambda e: saes.SAEConfig("topk", 8, 16, aux_coefficient=0.1), ValueError,
     r"k is required for architecture 'topk'"),
    ("config-k-too-big", lambda e: saes.SAEConfig("topk", 8, 16, k=16, aux_coefficient=0.1), ValueError,
     r"k must be < d_sae=16, got k=16"),
    ("config-k-bool", lambda e: saes.SAEConfig("topk", 8, 16, k=True, aux_coefficient=0.1), ValueError,
     r"k must be a positive int, got True"),
    ("config-not-applicable", lambda e: saes.SAEConfig("relu", 8, 16, l1_coefficient=1.0, k=2), ValueError,
     r"k does not apply to architecture 'relu'"),
    ("config-momentum", lambda e: saes.SAEConfig("batchtopk", 8, 16, k=2, aux_coefficient=0.1,
                                                threshold_momentum=2.0), ValueError,
     r"threshold_momentum must be in \(0, 1\], got 2\.0"),
    ("config-from-dict-unknown", lambda e: saes.SAEConfig.from_dict({"architecture": "topk", "dinn": 3}),
     ValueError, r"SAEConfig\.from_dict got unknown keys \['dinn'\]"),
    ("build-unknown-arch", lambda e: saes.build_sae("gated", 8, 16), ValueError,
     r"unknown SAE architecture 'gated'; known: \['batchtopk', 'jumprelu', 'relu', 'topk'\]"),
    # ---- SAE inputs
    ("input-float64", lambda e: e.sae()(X.double()), TypeError,
     r"x has dtype torch\.float64 but this SAE's parameters are torch\.float32; convert the input"),
    ("input-float64-encode", lambda e: e.sae().encode(X.double()), TypeError, r"x has dtype torch\.float64"),
    ("input-bfloat16", lambda e: e.sae()(X.bfloat16()), TypeError, r"x has dtype torch\.bfloat16"),
    ("input-float32-to-float64-sae", lambda e: e.sae(dtype=torch.float64)(X), TypeError,
     r"x has dtype torch\.float32 but this SAE's parameters are torch\.float64"),
    ("input-float64-training", lambda e: e.sae().training_forward(X.double()), TypeError,
     r"x has dtype torch\.float64 but this SAE's parameters are torch\.float32"),
    ("decode-float64", lambda e: e.sae().decode(torch.zeros(2, 128, dtype=torch.float64)), TypeError,
     r"latents has dtype torch\.float64"),
    ("input-width", lambda e: e.sae()(torch.randn(3, 32)), ValueError,
     r"x must be a tensor of shape \[\.\.\., 64\], got \(3, 32\)"),
    ("input-int", lambda e: e.sae()(torch.ones(3, 64, dtype=torch.long)), ValueError,
     r"x must be floating point, got torch\.int64"),
    ("input-list", lambda e: e.sae()([0.0] * 64), ValueError, r"x must be a tensor of shape \[\.\.\., 64\], got list"),
    ("input-meta-device", lambda e: e.sae()(torch.empty(3, 64, device="meta")), ValueError,
     r"x is on meta but this SAE is on cpu"),
    ("decode-width", lambda e: e.sae().decode(torch.zeros(2, 64)), ValueError,
     r"latents must be a tensor of shape \[\.\.\., 128\]"),
    ("training-3d", lambda e: e.sae().training_forward(torch.randn(2, 3, 64)), ValueError,
     r"x must be \[batch, 64\] for training_forward, got \(2, 3, 64\)"),
    ("training-dead-mask", lambda e: e.sae().training_forward(X, dead_mask=torch.zeros(128)), ValueError,
     r"dead_mask must be a BoolTensor of shape \[128\]"),
    ("init-b-dec-method", lambda e: e.sae().init_b_dec(X, method="median"), ValueError,
     r"method must be 'geometric_median' or 'mean', got 'median'"),
    ("init-b-dec-empty", lambda e: e.sae().init_b_dec(torch.zeros(0, 64)), ValueError,
     r"x_sample must be \[n>0, 64\]"),
    # ---- SAE files
    ("load-missing", lambda e: saes.load(e.tmp / "nope"), FileNotFoundError,
     r"path must be an SAE folder with cfg\.json and sae_weights\.safetensors"),
    ("load-cfg-invalid-json", lambda e: saes.load(e.sae_dir(cfg__json="{")), ValueError,
     r"cfg\.json: invalid JSON"),
    ("load-cfg-list", lambda e: saes.load(e.sae_dir(cfg__json="[]")), ValueError,
     r"cfg\.json: holds a JSON list; expected a JSON object"),
    ("load-cfg-no-d-in", lambda e: saes.load(e.sae_dir(cfg__json='{"architecture": "topk", "k": 2}')), ValueError,
     r"cfg\.json: has no 'd_in' \(an int\); got None"),
    ("load-cfg-arch", lambda e: saes.load(e.sae_dir(cfg__json='{"architecture": "gated", "d_in": 4, "d_sae": 8}')),
     ValueError, r"architecture='gated' in cfg\.json is not supported"),
    ("load-weights-truncated", lambda e: saes.load(e.sae_dir(sae_weights__safetensors=b"\x10\x00\x00")),
     ValueError, r"sae_weights\.safetensors: not a readable safetensors file"),
    ("load-weights-shape", lambda e: saes.load(_swap_weights(e)), ValueError,
     r"sae_weights\.safetensors: tensor W_enc must have shape \(64, 128\), got \(32, 128\)"),
    ("save-to-file", lambda e: e.sae().save(e.write("f.txt", "x")), ValueError,
     r"path must be a folder \(or not exist yet\), got the file"),
    # ---- training configs
    ("train-site-empty", lambda e: _cfg(site=""), ValueError, r"site must be a non-empty string"),
    ("train-d-sae", lambda e: _cfg(d_sae=0), ValueError, r"d_sae must be an integer >= 1; got 0"),
    ("train-k-too-big", lambda e: _cfg(k=16), ValueError, r"k must be smaller than d_sae; got k=16 >= d_sae=16"),
    ("train-steps-and-tokens", lambda e: _cfg(total_tokens=64), ValueError, r"give steps or total_tokens, not both"),
    ("train-no-steps", lambda e: _cfg(steps=None), ValueError, r"give steps or total_tokens; got neither"),
    ("train-steps-float", lambda e: _cfg(steps=1.5), ValueError, r"steps must be an integer >= 1; got 1\.5"),
    ("train-batch-size-zero", lambda e: _cfg(batch_size=0), ValueError, r"batch_size must be an integer >= 1; got 0"),
    ("train-buffer-batches", lambda e: _cfg(buffer_batches=1), ValueError, r"buffer_batches must be >= 2"),
    ("train-lr-nan", lambda e: _cfg(lr=float("nan")), ValueError, r"lr must be a finite number >= 0; got nan"),
    ("train-betas", lambda e: _cfg(adam_betas=(1.0, 0.9)), ValueError, r"adam_betas must be two numbers in \[0, 1\)"),
    ("train-decay", lambda e: _cfg(decay="exp"), ValueError,
     r"decay must be one of \('constant', 'linear', 'cosine'\)"),
    ("train-decay-start", lambda e: _cfg(decay_start=1.0), ValueError, r"decay_start must be in \[0, 1\); got 1\.0"),
    ("train-grad-norm", lambda e: _cfg(max_grad_norm=0), ValueError, r"max_grad_norm must be > 0 or None; got 0"),
    ("train-resume-no-dir", lambda e: _cfg(resume=True), ValueError, r"resume=True needs checkpoint_dir"),
    ("train-dtype", lambda e: _cfg(dtype="int8"), ValueError, r"dtype must be one of \('float32'"),
    ("train-model-without-data", lambda e: _cfg(model="smollm2"), ValueError,
     r"model is set but dataset is None; give a token source"),
    ("train-from-dict-unknown", lambda e: TrainConfig.from_dict({"site": SITE, "dsae": 3}), ValueError,
     r"unknown TrainConfig fields \['dsae'\]"),
    ("train-not-a-config", lambda e: saes.train({"site": SITE}), TypeError, r"config must be a TrainConfig; got dict"),
    ("train-no-source", lambda e: saes.train(_cfg()), ValueError,
     r"give model \(with dataset\) or activations \(a cached-activation folder\)"),
    ("train-existing-dir", lambda e: saes.train(_cfg(checkpoint_dir=str(_ckpt(e))), store=_store()), FileExistsError,
     r"checkpoint_dir .* already holds a checkpoint \(step_00000002\); pass resume=True \(--resume\)"),
    ("train-dir-is-file", lambda e: saes.train(_cfg(checkpoint_dir=str(e.write("ck", "x"))), store=_store()),
     NotADirectoryError, r"checkpoint_dir .*ck is a file; expected a folder"),
    ("train-device-cuda", lambda e: saes.train(_cfg(device="cuda"), store=_store()), RuntimeError,
     r"device='cuda' but CUDA is not available on this machine"),
    ("train-device-unknown", lambda e: saes.train(_cfg(device="tpu:0"), store=_store()), ValueError,
     r"device='tpu:0' is not a device name"),
    ("train-diverges", _diverge, saes.NonFiniteError, r"non-finite loss \(inf\) at step 0; training stopped"),
    ("resume-latest-corrupt", lambda e: latest_checkpoint(_ckpt(e, latest__json="{oops")), ValueError,
     r"latest\.json: invalid JSON"),
    ("resume-latest-no-path", lambda e: latest_checkpoint(_ckpt(e, latest__json='{"step": 2}')), ValueError,
     r"latest\.json: has no 'path'"),
    ("resume-trainer-corrupt", lambda e: load_checkpoint(latest_checkpoint(_ckpt(e, trainer__safetensors=b"xx"))),
     ValueError, r"trainer\.safetensors: not a readable safetensors file"),
    ("resume-trainer-json-list", lambda e: load_checkpoint(latest_checkpoint(_ckpt(e, trainer__json="[1]"))),
     ValueError, r"trainer\.json: holds a JSON list"),
    # ---- activation stores
    ("store-batch-size-zero", lambda e: _store(batch_size=0), ValueError, r"batch_size must be an int >= 1; got 0"),
    ("store-batch-size-bool", lambda e: _store(batch_size=True), TypeError, r"batch_size must be an int; got True"),
    ("store-batch-size-float", lambda e: _store(batch_size=8.0), TypeError, r"batch_size must be an int; got 8\.0"),
    ("store-buffer-batches", lambda e: _store(buffer_batches=1), ValueError, r"buffer_batches must be an int >= 2"),
    ("store-rank", lambda e: _store(rank=2, world_size=2), ValueError, r"rank must be an int in 0\.\.1; got 2"),
    ("store-world-size", lambda e: _store(world_size=0), ValueError, r"world_size must be an int >= 1; got 0"),
    ("store-indivisible", lambda e: _store(batch_size=9, world_size=2), ValueError,
     r"batch_size \(9\) must be divisible by world_size \(2\)"),
    ("store-seed", lambda e: _store(seed=-1), ValueError, r"seed must be an int >= 0; got -1"),
    ("store-dtype", lambda e: _store(dtype=torch.int32), TypeError, r"dtype must be a floating-point torch\.dtype"),
    ("store-device", lambda e: _store(device="cuda:3"), RuntimeError, r"device='cuda:3' but CUDA is not available"),
    ("store-source", lambda e: ActivationStore(torch.randn(8, 8), batch_size=4), TypeError,
     r"source must be an activation source .*; got Tensor"),
    ("store-acts-int", lambda e: ActivationStore.from_tensor(torch.ones(8, 8, dtype=torch.long), batch_size=4),
     ValueError, r"acts must be a float tensor \[n>0, d_in\]"),
    ("store-chunk-rows", lambda e: TensorActivations(torch.randn(8, 8), chunk_rows=0), ValueError,
     r"chunk_rows must be an int >= 1; got 0"),
    ("store-budget-buffer", lambda e: _store(memory_budget="1000"), MemoryBudgetError,
     r"the activation store's shuffle buffer \(2 batches × 8 rows × d_in 8 × 4 bytes, twice while it is "
     r"reshuffled\) needs 1\.0 KiB, above the memory budget of 1000 B"),
    ("store-budget-no-room", lambda e: _store(memory_budget=1024), MemoryBudgetError,
     r"not even one activation row \(32 B\) of a read fits in the 0 B the memory budget leaves"),
    ("store-budget-invalid", lambda e: _store(memory_budget="much"), ValueError,
     r"memory_budget='much' is not a memory size"),
    ("store-sample-zero", lambda e: _store().sample(0), ValueError, r"n must be an int >= 1; got 0"),
    ("store-model-batch-size", lambda e: ModelActivations(e.llama, SITE, e.tokens, model_batch_size=0), ValueError,
     r"model_batch_size must be an int >= 1; got 0"),
    ("store-model-site", lambda e: ModelActivations(e.llama, "blocks.1.hook_resid_pst", e.tokens), KeyError,
     r"Did you mean 'blocks\.1\.hook_resid_post'"),
    ("store-model-world-size", lambda e: ModelActivations(e.llama, SITE, e.tokens[:1], world_size=2), ValueError,
     r"tokens has 1 sequences, fewer than world_size=2"),
    ("store-model-budget", lambda e: ActivationStore.from_model(e.llama, SITE, torch.ones(2, 200, dtype=torch.long),
                                                                context_length=100, batch_size=4,
                                                                memory_budget="40KiB"),
     MemoryBudgetError, r"one sequence of 100 tokens at site 'blocks\.1\.hook_resid_post' needs 50\.0 KiB"),
    ("site-activations-float-tokens", lambda e: site_activations(e.llama, SITE, torch.rand(1, 4)), TypeError,
     r"tokens must hold integer token ids"),
    ("cache-missing", lambda e: CachedActivations(e.tmp), FileNotFoundError, r"holds no activations\.json"),
    ("cache-index-invalid", lambda e: CachedActivations(_cache_dir(e, raw="{")), ValueError,
     r"activations\.json: invalid JSON"),
    ("cache-index-keys", lambda e: CachedActivations(_cache_dir(e, d_in=8)), ValueError,
     r"activations\.json: not an activation-cache index \(expected 'd_in' and 'shards'"),
    ("cache-index-shard-missing", lambda e: CachedActivations(_cache_dir(e, d_in=8, shards=[
        {"file": "gone.safetensors", "rows": 20}])), ValueError, r"lists shards that are missing or empty"),
    ("cache-shard-corrupt", lambda e: CachedActivations(_corrupt_shard(e)).read(), ValueError,
     r"shard_00000\.safetensors: not a readable safetensors file"),
    ("cache-chunk-rows", lambda e: CachedActivations(_cache_dir(e), chunk_rows=-1), ValueError,
     r"chunk_rows must be an int >= 1; got -1"),
    ("write-cache-n-rows", lambda e: write_activation_cache(X, e.tmp / "c", 0, progress=False), ValueError,
     r"n_rows must be an int >= 1; got 0"),
    ("write-cache-shard-rows", lambda e: write_activation_cache(X, e.tmp / "c", 8, shard_rows=0, progress=False),
     ValueError, r"shard_rows must be an int >= 1; got 0"),
    ("write-cache-source", lambda e: write_activation_cache("acts", e.tmp / "c", 8, progress=False), TypeError,
     r"source must be an activation source or a \[n, d_in\] tensor; got str"),
    ("write-cache-dtype", lambda e: write_activation_cache(X, e.tmp / "c", 8, dtype=torch.int8, progress=False),
     TypeError, r"dtype must be a floating-point torch\.dtype"),
    ("write-cache-budget", lambda e: write_activation_cache(X, e.tmp / "c", 8, memory_budget=100, progress=False),
     MemoryBudgetError, r"not even one activation row \(256 B\) of a shard fits"),
    # ---- token sources
    ("tokens-context-zero", lambda e: load_tokens(torch.arange(64), None, 0), ValueError,
     r"context_length must be an int >= 1; got 0"),
    ("tokens-context-bos", lambda e: pack_texts(["some text"], e.llama.tokenizer, 1), ValueError,
     r"context_length must be an int >= 2; got 1"),
    ("tokens-empty-list", lambda e: load_tokens([], e.llama.tokenizer, 8), ValueError,
     r"dataset is an empty list; expected texts"),
    ("tokens-list-of-ints", lambda e: load_tokens([1, 2, 3], e.llama.tokenizer, 8), TypeError,
     r"dataset: a list must hold only strings \(texts\); got a int in it"),
    ("tokens-missing-file", lambda e: load_tokens(e.tmp / "nope.txt", e.llama.tokenizer, 8), FileNotFoundError,
     r"dataset: no file at .*nope\.txt"),
    ("tokens-not-utf8", lambda e: load_tokens(e.write("bin.txt", b"\xff\xfe\xfa"), e.llama.tokenizer, 8), ValueError,
     r"dataset: .*bin\.txt is not UTF-8 text"),
    ("tokens-empty-file", lambda e: load_tokens(e.write("empty.txt", "\n\n"), e.llama.tokenizer, 8), ValueError,
     r"dataset: .*empty\.txt holds no text"),
    ("tokens-corrupt-safetensors", lambda e: load_tokens(e.write("t.safetensors", b"junk"), None, 8), ValueError,
     r"t\.safetensors: not a readable safetensors file"),
    ("tokens-float-tensor", lambda e: load_tokens(torch.rand(4, 8), None, 8), ValueError,
     r"tokens must be an integer tensor \[n\] or \[n_seq, seq_len\]"),
    ("tokens-too-short", lambda e: load_tokens(torch.arange(5), None, 8), ValueError,
     r"tokens of shape \(5,\) hold no context of length 8"),
    ("tokens-builtin", lambda e: load_tokens("builtin:wikipedia", e.llama.tokenizer, 8), ValueError,
     r"unknown builtin corpus 'wikipedia'; available: 'stdlib-docs'"),
    ("tokens-no-tokenizer", lambda e: load_tokens(["text"], None, 8), ValueError,
     r"text token sources need a model with a tokenizer"),
    # ---- evaluation
    ("eval-batch-size", lambda e: saes.evaluate(e.sae(), e.llama, SITE, e.tokens, batch_size=0, progress=False),
     ValueError, r"batch_size must be an int >= 1; got 0"),
    ("eval-max-sequences", lambda e: saes.evaluate(e.sae(), e.llama, SITE, e.tokens, max_sequences=0,
                                                   progress=False), ValueError,
     r"max_sequences must be an int >= 1; got 0"),
    ("eval-context-length", lambda e: saes.evaluate(e.sae(), e.llama, SITE, ["a text"], context_length=1,
                                                    progress=False), ValueError,
     r"context_length must be an int >= 2; got 1"),
    ("eval-norm-ratio", lambda e: saes.evaluate(e.sae(), e.llama, SITE, e.tokens, max_norm_ratio=0.5,
                                                progress=False), ValueError,
     r"max_norm_ratio must be a number > 1"),
    ("eval-width", lambda e: saes.evaluate(e.sae(32), e.llama, SITE, e.tokens, progress=False), ValueError,
     r"d_in mismatch: the SAE has d_in=32 but site 'blocks\.1\.hook_resid_post' has width 64"),
    ("eval-site", lambda e: saes.evaluate(e.sae(), e.llama, "blocks.9.hook_resid_post", e.tokens, progress=False),
     KeyError, r"layer 9 is out of range"),
    ("eval-one-position", lambda e: saes.evaluate(e.sae(), e.llama, SITE, e.tokens[:, :1], progress=False),
     ValueError, r"tokens must have at least 2 positions"),
]


def _swap_weights(e):
    folder = e.sae_dir(32)
    (folder / "cfg.json").write_text((e.sae_dir(64) / "cfg.json").read_text())
    return folder


def _corrupt_shard(e):
    folder = _cache_dir(e)
    (folder / "shard_00000.safetensors").write_bytes(b"junk")
    return folder
