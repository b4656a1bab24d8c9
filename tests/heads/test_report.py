"""``HeadReport``: the JSON layout, the offline HTML page, ``top``; and the ``interp heads`` verb."""

import json
import warnings

import pytest

from interp import heads
from interp.cli import main

SMALL = dict(repeat_half=8, repeat_batch=2, validation_batch=2, ngram_length=40, ngram_batch=2,
             retrieval_lengths=(160,), retrieval_depths=(0.5,), draws=2, top_k=2)
SMALL_FLAGS = ["--repeat-half", "8", "--repeat-batch", "2", "--validation-batch", "2", "--ngram-length", "40",
               "--ngram-batch", "2", "--retrieval-lengths", "160", "--retrieval-depths", "0.5", "--draws", "2"]


@pytest.fixture(scope="module")
def report(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return heads.detect(tiny("llama"), progress=False, name="tiny-llama", **SMALL)


def test_json_layout(report, tiny):
    data = json.loads(report.to_json())
    assert list(data) == ["model", "n_layers", "n_heads", "scores", "validation", "config", "derived_defaults"]
    assert data["model"] == "tiny-llama" and (data["n_layers"], data["n_heads"]) == (2, 4)
    assert set(data["scores"]) == {"induction", "previous_token", "duplicate_token", "ngram"}
    for rows in data["scores"].values():
        assert len(rows) == 2 and all(len(r) == 4 and all(isinstance(x, float) for x in r) for r in rows)
    assert list(data["validation"]) == list(heads.KINDS)
    assert "leaves no single-token ordinal task" in data["validation"]["successor"]["skipped"]
    assert "reproduced the needle in none" in data["validation"]["retrieval"]["skipped"]
    v = data["validation"]["induction"]
    for key in ("metric", "clean", "top_ablated", "random_ablated", "effect_top", "effect_random_mean",
                "effect_random_std", "causal", "verdict", "top", "detector", "protocol"):
        assert key in v, key
    assert len(v["random_ablated"]) == 2 and len(v["top"]) == 2
    assert v["finding"].startswith("Best head L") and "prefix-matching heads raise it" in v["finding"]
    assert data["validation"]["successor"]["finding"].startswith("Skipped: this tokenizer leaves no single-token")
    assert len(v["detector"]["copying_score"]) == 2
    assert set(data["validation"]["ngram"]["detector"]) >= {"S1", "S2", "S3", "lift2", "best_k", "chance"}


def test_html_is_one_offline_file(report, tmp_path):
    path = report.save_html(tmp_path / "r.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Plotly" in text
    assert "<script src" not in text and '<link rel="stylesheet" href' not in text  # nothing loaded from outside
    for needle in ("Summary", "What the detectors found",
                   "top heads", "causal", "Protocol", "Forward passes", "leaves no single-token"):
        assert needle in text, needle
    assert "<table>" in report._repr_html_()


def test_top(report):
    top = report.top("induction")
    assert len(top) == 2 and top[0].score >= top[1].score
    assert report.top("induction", 8)[7].score <= top[1].score
    with pytest.raises(KeyError, match="skipped"):
        report.top("successor")


def test_cli_writes_report_and_json(tiny_dir, tmp_path, capsys):
    out, js = tmp_path / "r.html", tmp_path / "s.json"
    rc = main(["heads", "--model", str(tiny_dir("llama")), "--out", str(out), "--json", str(js), "--kinds",
               "induction,previous_token", "--top-k", "2", "--seed", "3", "--no-progress", *SMALL_FLAGS])
    assert rc == 0
    data = json.loads(js.read_text())
    assert set(data["scores"]) == {"induction", "previous_token"} and data["n_heads"] == 4
    assert out.read_text().startswith("<!DOCTYPE html>")
    printed = capsys.readouterr().out
    assert "induction" in printed and "wrote" in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["--kinds", "induction,bogus"], "unknown head kind(s) 'bogus'; valid kinds: induction, previous_token, "
                                     "duplicate_token, retrieval, successor, ngram"),
    (["--top-k", "9"], "top_k=9 is larger than the number of heads of this model (8 = 2 layers x 4 heads)"),
    (["--top-k", "0"], "top_k must be an int >= 1"),
    (["--retrieval-depths", "0.5,2"], "retrieval_depths entries must be numbers in [0, 1]"),
])
def test_cli_bad_input(tiny_dir, tmp_path, capsys, argv, message):
    rc = main(["heads", "--model", str(tiny_dir("llama")), "--json", str(tmp_path / "s.json"), "--no-progress",
               *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_needs_an_output(tiny_dir, capsys):
    assert main(["heads", "--model", str(tiny_dir("llama"))]) == 2
    assert "pass --out report.html and/or --json scores.json" in capsys.readouterr().err


def test_cli_thorough_and_successor_prompts_reach_the_config(tiny_dir, tmp_path):
    js = tmp_path / "s.json"
    rc = main(["heads", "--model", str(tiny_dir("llama")), "--json", str(js), "--no-progress", "--kinds", "induction",
               "--thorough", "--successor-prompts", "3", "--draws", "2", "--repeat-half", "8"])
    assert rc == 0
    cfg = json.loads(js.read_text())["config"]
    assert cfg["validation_batch"] == 4 and cfg["retrieval_validation_trials"] == 2  # the thorough preset
    assert cfg["successor_prompts"] == 3  # a given value wins over the preset
    assert main(["heads", "--model", str(tiny_dir("llama")), "--json", str(js), "--successor-prompts", "-1"]) == 2
