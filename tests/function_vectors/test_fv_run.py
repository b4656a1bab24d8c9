"""The whole experiment on a tiny model: the vector, accuracies, the result type, its page and the CLI verb."""

import json

import pytest
import torch

import interp
from interp.cli import main
from interp.function_vectors import (
    FunctionVectorResult,
    FVConfig,
    accuracy,
    add_at_last_token,
    function_vector,
    function_vectors,
    make_task,
    tasks,
    top_heads,
    zero_shot_prompts,
)
from interp.function_vectors import cli as fv_cli


def test_vector_is_the_sum_of_the_top_heads_means_and_is_added_at_the_last_token(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    cie = torch.randn(model.n_layers, model.n_heads)
    heads = top_heads(cie, 3)
    assert [float(cie[la, h]) for la, h in heads] == sorted(cie.flatten().tolist(), reverse=True)[:3]
    means = torch.randn(model.n_layers, model.n_heads, model.d_model)
    fv = function_vector(means, heads)
    torch.testing.assert_close(fv, sum(means[la, h] for la, h in heads))
    task = make_task(model, "next_letter")
    zs = zero_shot_prompts(task, model)
    with torch.no_grad():  # reference: the stream entering block 1 with fv at the last token, run from there
        _, cache = model.run_with_cache(zs.tokens, names_filter=["blocks.1.hook_resid_pre"])
        resid = cache["blocks.1.hook_resid_pre"].clone()
        resid[:, -1] += fv
        ref = model(resid, start_at_layer=1)[:, -1].argmax(-1) == zs.answers
    assert (accuracy(model, zs.tokens, zs.answers, hooks=add_at_last_token(model, fv, 1), batch_size=7) == ref).all()
    with pytest.raises(ValueError, match="k must be"):
        top_heads(cie, 0)
    with pytest.raises(ValueError, match="layer must be"):
        add_at_last_token(model, fv, model.n_layers)


def test_function_vectors_result_and_page(tiny_dir, tmp_path):
    model = interp.load_model(tiny_dir("gpt2"))
    r = function_vectors(model, "next_letter", FVConfig(k=3, n_demos=4, n_mean=6, n_cie=4, n_random=2, layer=1),
                         progress=False)
    assert isinstance(r, FunctionVectorResult) and r.k == 3 and r.layer == 1 and len(r.heads) == 3
    assert r.cie.shape == (model.n_layers, model.n_heads) and len(r.sweep_accuracy) == model.n_layers
    assert r.sweep_accuracy[1] == pytest.approx(r.fv_accuracy) and len(r.random_accuracies) == 2
    assert all(0 <= a <= 1 for a in [r.icl_accuracy, r.corrupt_accuracy, r.zero_shot_accuracy, r.fv_accuracy])
    data = json.loads(r.to_json())
    assert data["task"] == "next_letter" and data["summary"]["top_heads"][0][:2] == list(r.heads[0])
    assert len(r.plot().data) == 5 and "plotly" in r._repr_html_()
    page = r.save_html(tmp_path / "fv.html").read_text()
    assert "<script src" not in page and "Top heads" in page
    with pytest.raises(ValueError, match="n_mean"):
        FVConfig(n_mean=0)
    with pytest.raises(ValueError, match="layer=9"):
        function_vectors(model, "next_letter", FVConfig(layer=9))


def test_cli_verb(tiny_dir, tmp_path, capsys):
    path = tiny_dir("llama")
    argv = ["function-vectors", "--model", str(path), "--task", "next_number", "--k", "2", "--n-demos", "3",
            "--n-mean", "4", "--n-cie", "3", "--n-random", "1", "--out", str(tmp_path / "fv.html"), "--json",
            str(tmp_path / "fv.json"), "--quiet"]
    assert main(argv) == 0
    assert "next_number: ICL" in capsys.readouterr().out
    assert json.loads((tmp_path / "fv.json").read_text())["k"] == 2
    assert (tmp_path / "fv.html").stat().st_size > 100_000


def test_cli_defaults_match_the_config():
    d = FVConfig()
    assert fv_cli._TASKS == tasks.TASKS
    assert vars(fv_cli._DEFAULTS) == {k: getattr(d, k) for k in vars(fv_cli._DEFAULTS)}
