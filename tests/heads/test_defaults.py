"""Defaults that fit the model: a default that cannot work on a model (a 35-token vocabulary, 8 heads, a 128-token
context) is derived from it and the report says what and why; a value given explicitly that cannot work is an error.
"""

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

import interp
from interp import heads
from interp.heads.config import HeadsConfig

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def toy():
    """The planted model of planted_heads.py with 24 filler words: a 35-token vocabulary (31 usable), 2 layers x 4
    heads, a 128-token context."""
    src = (HERE / "planted_heads.py").read_text().replace("N_FILLER = 37", "N_FILLER = 24")
    assert "N_FILLER = 24" in src
    mod = types.ModuleType("planted_toy")
    exec(compile(src, "planted_toy", "exec"), mod.__dict__)
    model = interp.wrap(mod.build(ngram=False))
    assert (model.d_vocab, model.n_layers * model.n_heads, model.n_ctx) == (35, 8, 128)
    return model, mod


def test_defaults_are_fitted_and_stated(toy):
    model, _ = toy
    cfg = HeadsConfig.for_model(model)
    derived = dict(cfg.derived)
    assert cfg.top_k == 1 and "8 heads" in derived["top_k"]
    assert cfg.repeat_half == 31 and "31 usable tokens" in derived["repeat_half"]
    assert cfg.ngram_length == 127 and "context of 128" in derived["ngram_length"]
    assert max(cfg.retrieval_lengths) <= 120 and "context of 128" in derived["retrieval_lengths"]
    assert "draws" not in derived  # 7 single heads are enough for 5 distinct draws


def test_default_detect_finds_the_planted_heads(toy, tmp_path):
    model, mod = toy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = heads.detect(model, progress=False)
    assert report.skipped == {}
    expect = {"previous_token": mod.PREV, "duplicate_token": mod.DUP, "induction": mod.INDUCTION,
              "retrieval": mod.INDUCTION, "successor": mod.SUCCESSOR}
    for kind, head in expect.items():
        assert report.top(kind)[0][:2] == head, kind
    assert report.validation["induction"].causal and report.validation["previous_token"].causal
    data = json.loads(report.to_json())
    assert data["derived_defaults"]["repeat_half"]["value"] == 31
    assert "31 usable tokens" in data["derived_defaults"]["repeat_half"]["why"]
    page = Path(report.save_html(tmp_path / "r.html")).read_text()
    assert "defaults fitted to the model" in page and "31 usable tokens" in page


def test_given_values_are_kept_or_refused(toy):
    model, _ = toy
    cfg = HeadsConfig.for_model(model, top_k=3, repeat_half=10)
    assert (cfg.top_k, cfg.repeat_half) == (3, 10) and "top_k" not in dict(cfg.derived)
    with pytest.raises(ValueError, match=r"repeat_half=40 needs that many distinct tokens .* offers 31"):
        HeadsConfig.for_model(model, repeat_half=40)
    with pytest.raises(ValueError, match=r"ngram_length=200 makes rows of 201 tokens .* context is 128"):
        HeadsConfig.for_model(model, ngram_length=200)
    with pytest.raises(ValueError, match=r"retrieval_lengths=\(256,\) makes rows"):
        HeadsConfig.for_model(model, retrieval_lengths=(256,))
    with pytest.raises(ValueError, match=r"top_k=9 is larger than the number of heads"):
        heads.detect(model, top_k=9, progress=False)


def test_none_means_not_given(toy):
    model, _ = toy
    assert HeadsConfig.for_model(model, top_k=None, repeat_half=None) == HeadsConfig.for_model(model)


def test_zoo_mamba_defaults():
    from interp import zoo

    model = zoo.load("mamba2-facts")
    cfg = HeadsConfig.for_model(model)
    total = model.n_layers * model.n_heads
    assert cfg.top_k == max(1, min(5, total // 8)) and cfg.repeat_half == 8  # the implicit-attention probes
    report = heads.detect(model, kinds="induction,previous_token", progress=False)
    assert report.config.top_k == cfg.top_k and len(report.top("induction")) == cfg.top_k


def test_cli_prints_the_fitted_defaults(tiny_dir, tmp_path):
    folder = tiny_dir("llama")
    proc = subprocess.run([sys.executable, "-m", "interp.cli", "heads", "--model", str(folder), "--kinds",
                           "induction,previous_token", "--json", str(tmp_path / "s.json"), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "default top_k=1: an eighth of the model's 8 heads" in proc.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["derived_defaults"]["top_k"]["value"] == 1


@pytest.mark.integration
def test_smollm2_keeps_the_documented_defaults(smollm2):
    cfg = HeadsConfig.for_model(smollm2)
    assert cfg.derived == () and cfg == HeadsConfig()



def test_thorough_preset(toy, tiny):
    from interp.heads.config import THOROUGH

    model, _ = toy
    quick, slow = HeadsConfig.for_model(model), HeadsConfig.for_model(model, thorough=True)
    assert (quick.validation_batch, quick.successor_prompts, quick.retrieval_validation_trials) == (2, 8, 1)
    assert (slow.validation_batch, slow.successor_prompts, slow.retrieval_validation_trials) == (4, 0, 2)
    assert HeadsConfig.for_model(model, thorough=True, validation_batch=3).validation_batch == 3  # given wins
    assert THOROUGH["retrieval_lengths"] == (256, 512, 1024, 2048)
    m_cfg = HeadsConfig.for_model(tiny("mamba2"), thorough=True)
    assert m_cfg.retrieval_lengths == (24, 32, 40) and m_cfg.validation_batch == 4  # implicit probes stay short
    with pytest.raises(TypeError, match="thorough must be True or False"):
        HeadsConfig.for_model(model, thorough="yes")


def test_successor_prompts_per_task(tiny):
    model = tiny("llama")
    tasks = heads.successor.Tasks(kept={"abc": tuple(range(10, 22))}, dropped={})
    every, _ = heads.successor.prompts(model, tasks, 2)
    some, _ = heads.successor.prompts(model, tasks, 2, per_task=3)
    assert every.shape[0] == 10 and some.shape[0] == 3
    assert some[0].tolist() == every[0].tolist() and some[-1].tolist() == every[-1].tolist()  # first and last run
    assert some[1].tolist() in every.tolist()
    assert heads.successor.prompts(model, tasks, 2, per_task=100)[0].shape == every.shape
    with pytest.raises(ValueError, match="per_task must be an int >= 0"):
        heads.successor.prompts(model, tasks, 2, per_task=-1)
