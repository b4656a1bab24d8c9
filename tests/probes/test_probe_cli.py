"""`interp probe`: JSONL in, HTML + JSON out (the documented keys), a control that does not apply reported rather
than failing, `--control none`, one-line errors with exit code 2 (arguments checked before the model loads)."""

import json

import pytest

from interp.cli import main
from interp.probes.datasets import sentiment_texts


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "data.jsonl"
    return sentiment_texts(60, seed=1).write_jsonl(path)


def test_probe_writes_html_and_json(tiny_dir, data, tmp_path, capsys):
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--text-key", "text",
               "--label-key", "y", "--site", "blocks.*.hook_resid_post", "--position", "mean", "--folds", "3",
               "--out", str(tmp_path / "p.html"), "--json", str(tmp_path / "p.json"), "--quiet",
               "--save-probes", str(tmp_path / "probes")])
    assert rc == 0
    out = json.loads((tmp_path / "p.json").read_text())
    assert out["sites"] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert len(out["accuracy"]) == len(out["control"]) == 2 and isinstance(out["majority"], float)
    assert out["classes"] == ["negative", "positive"] and out["position"] == "mean"
    html = (tmp_path / "p.html").read_text()
    assert html.count("<script") >= 2 and "<table>" in html  # plotly.js inline, a figure, the table
    assert len(list((tmp_path / "probes").iterdir())) == 2
    assert "best blocks." in capsys.readouterr().out


def test_control_key_and_families(tiny_dir, data, tmp_path):
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--control-key", "word",
               "--family", "mass_mean", "--folds", "2", "--json", str(tmp_path / "m.json"), "--quiet"])
    assert rc == 0 and json.loads((tmp_path / "m.json").read_text())["hyper"]["control_types"] == "given"


@pytest.mark.parametrize("extra, message", [
    (["--site", "blocks.*.hook_resid_psot"], "matches no site"),
    (["--label-key", "label"], "--label-key: line 1"),
    (["--family", "ridge"], "numeric targets"),
    (["--position", "regex:zzz"], "finds no token in 60 text"),
    (["--control", "none", "--control-key", "word"], "pass one or the other"),
])
def test_errors_are_one_line(tiny_dir, data, capsys, extra, message):
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--quiet", *extra])
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after weight-loading bars
    assert rc == 2 and last.startswith("interp probe: error: ") and message in last


def test_same_token_in_every_text_reports_control_not_applicable(tiny_dir, data, tmp_path, capsys):
    """Every text ends with '.', so the default control types (the token read at 'last') are one type."""
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--folds", "3", "--quiet",
               "--json", str(tmp_path / "n.json"), "--out", str(tmp_path / "n.html")])
    out = capsys.readouterr().out
    assert rc == 0 and "\ncontrol: not applicable (position 'last' reads the same word type" in out
    assert "--control-key" in out and "--control none" in out
    summary = json.loads((tmp_path / "n.json").read_text())
    assert summary["control"] == [None, None] and summary["selectivity"] == [None, None]
    assert summary["control_note"].startswith("not applicable (") and all(a is not None for a in summary["accuracy"])
    assert "control: not applicable (" in (tmp_path / "n.html").read_text()


def test_control_none(tiny_dir, data, tmp_path, capsys):
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--folds", "3", "--quiet",
               "--control", "none", "--json", str(tmp_path / "none.json")])
    summary = json.loads((tmp_path / "none.json").read_text())
    assert rc == 0 and summary["hyper"]["control_types"] == "none" and summary["control_note"].startswith("not run")
    assert "control: not run" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--folds", "1"], "folds must be an int >= 2"),
    (["--folds", "40"], "class 'negative' has"),
    (["--C", "0"], "C must be a positive finite number"),
    (["--shuffles", "-1"], "shuffles must be an int >= 0"),
    (["--control-key", "subject", "--label-key", "word"], "--control-key: line 1"),
    (["--position", "middle"], "is not a rule"),
])
def test_bad_arguments_fail_before_the_model_loads(data, tmp_path, capsys, extra, message):
    rc = main(["probe", "--model", str(tmp_path / "no-such-model"), "--data", str(data), "--quiet", *extra])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("interp probe: error: ") and message in last
