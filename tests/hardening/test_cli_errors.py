"""The issue's CLI cases through the real command line: a corrupt weights file, an existing checkpoint folder,
``--device cuda`` without CUDA and a diverging loss each end in one error line and exit code 2 (``--debug`` keeps
the traceback); the previously done items of the hardening issue are checked here too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import transformers

import interp

SITE = "blocks.1.hook_resid_post"


def _run(*argv, module="interp.cli"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=300)


def _error_line(proc, verb: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("interp ")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr[-3000:]
    assert lines[0].startswith(f"interp {verb}: error: ")
    return lines[0]


def _train_args(tiny_dir, tmp_path, *extra):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: {'abcdefgh'[i % 8] * (i % 5 + 1)} went {i} miles."
                                  for i in range(40)))
    return ["sae", "train", "--site", SITE, "--d-sae", "16", "--k", "2", "--model", tiny_dir("llama"), "--dataset",
            corpus, "--context-length", "16", "--batch-size", "16", "--buffer-batches", "2", "--steps", "3",
            "--no-progress", *extra]


def test_corrupt_weights_file(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_dir("llama"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    line = _error_line(_run("info", folder), "info")
    assert f"{weights}: not a readable safetensors file" in line
    from interp.cli import main

    with pytest.raises(ValueError, match="not a readable safetensors file"):  # --debug: the exception propagates
        main(["--debug", "info", str(folder)])


def test_existing_checkpoint_dir(tiny_dir, tmp_path):
    run = tmp_path / "run"
    from interp.cli import main

    assert main([str(a) for a in _train_args(tiny_dir, tmp_path, "--checkpoint-dir", run)]) == 0
    line = _error_line(_run(*_train_args(tiny_dir, tmp_path, "--checkpoint-dir", run)), "sae")
    assert "already holds a checkpoint (step_00000003); pass resume=True (--resume)" in line
    # the module entry point used under torchrun behaves the same
    line = _error_line(_run(*_train_args(tiny_dir, tmp_path, "--checkpoint-dir", run)[1:], module="interp.saes.cli"),
                       "sae")
    assert "already holds a checkpoint" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(tiny_dir, tmp_path):
    line = _error_line(_run(*_train_args(tiny_dir, tmp_path, "--device", "cuda")), "sae")
    assert "device='cuda' but CUDA is not available on this machine" in line


def test_diverging_loss(tiny_dir, tmp_path):
    line = _error_line(_run(*_train_args(tiny_dir, tmp_path, "--lr", "1e30", "--checkpoint-dir", tmp_path / "r",
                                         "--checkpoint-every", "1")), "sae")
    assert "non-finite loss" in line and "The last good checkpoint is" in line and "step_00000001" in line


def test_multi_line_messages_become_one_line(monkeypatch, capsys):
    import interp.cli as cli

    def boom(args):
        raise ValueError("first line\n  second line")

    monkeypatch.setattr(cli, "_info", boom)
    assert cli.main(["info", "x"]) == 2
    assert capsys.readouterr().err == "interp info: error: first line second line\n"


# ---------------------------------------------------------------- items of the issue already fixed on main
def test_two_wrappers_of_one_hf_model_keep_their_hooks(tiny_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir("llama")).eval()
    w1, w2 = interp.wrap(hf), interp.wrap(hf)
    tokens = torch.randint(4, 100, (1, 6))
    clean = w1(tokens)
    zero = lambda p, hook: torch.zeros_like(p)
    for w in (w1, w2):
        assert (w.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_pattern", zero)]) - clean).abs().max() > 1e-3
        assert w.attention_patterns(tokens).shape == (2, 1, 4, 6, 6)


def test_transformer_lens_lists_only_sites_that_fire():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, act_fn="gelu")
    model = interp.wrap(HookedTransformer(cfg))
    assert "blocks.0.attn.hook_result" not in model.site_names()  # needs use_attn_result
    assert "blocks.0.attn.hook_result" in model.unlisted_sites
    _, cache = model.run_with_cache(torch.randint(0, 50, (1, 5)))
    assert list(cache) == model.site_names()  # every listed site fires
