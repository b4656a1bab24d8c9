"""``interp lens`` and ``interp tuned-lens`` on a tiny model: files written, JSON equal to the API, one-line errors."""

import json

import pytest

import interp
from interp import lenses
from interp.cli import main

PROMPT = "The Eiffel Tower is in Paris"


def test_lens_writes_html_and_json(tiny_dir, tmp_path, capsys):
    path = tiny_dir("llama")
    argv = ["lens", "--model", str(path), "--prompt", PROMPT, "--out", str(tmp_path / "l.html"), "--json",
            str(tmp_path / "l.json"), "--top-k", "3"]
    assert main(argv) == 0
    assert "logit lens: answer" in capsys.readouterr().out
    d = json.loads((tmp_path / "l.json").read_text())
    ref = lenses.logit_lens(interp.load_model(path), PROMPT, top_k=3)
    assert d["answer_rank"] == ref.answer_rank.tolist() and d["top_tokens"] == ref.top_tokens
    assert "Plotly.newPlot" in (tmp_path / "l.html").read_text()


def test_tuned_lens_train_then_use(tiny_dir, tmp_path, capsys):
    path = str(tiny_dir("mamba"))
    argv = ["tuned-lens", "--model", path, "--out", str(tmp_path / "lens"), "--steps", "2", "--batch-size", "2",
            "--context-length", "16", "--max-rows", "8", "--html", str(tmp_path / "kl.html"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps on 64 tokens" in out and "held-out KL" in out
    assert (tmp_path / "kl.html").is_file()
    lens = lenses.TunedLens.load(tmp_path / "lens")
    assert lens.training_info["steps"] == 2 and lens.heldout is not None
    assert main(["lens", "--model", path, "--prompt", PROMPT, "--tuned", str(tmp_path / "lens"), "--json",
                 str(tmp_path / "t.json"), "--answer-id", "5"]) == 0
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["lens"] == "tuned" and d["answer_id"] == 5


def test_tuned_lens_ci_sizes(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    assert main(["tuned-lens", "--model", str(tiny_dir("llama")), "--out", str(tmp_path / "lens"), "--quiet"]) == 0
    assert "trained 2 steps on 128 tokens" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    ([], "nothing to write"),
    (["--json", "x.json", "--answer", " a", "--answer-id", "3"], "not both"),
    (["--json", "x.json", "--tuned", "no/such/dir"], "tuned-lens folder"),
])
def test_lens_errors(tiny_dir, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["lens", "--model", str(tiny_dir("llama")), "--prompt", PROMPT, *extra]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after any loading bars
    assert last.startswith("interp lens: error:") and message in last
