"""`interp probe`: JSONL in, HTML + JSON out (the documented keys), one-line errors with exit code 2."""

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
    ([], "same word type"),   # every text ends with '.', so the default control types are one token
])
def test_errors_are_one_line(tiny_dir, data, capsys, extra, message):
    rc = main(["probe", "--model", str(tiny_dir("llama")), "--data", str(data), "--quiet", *extra])
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after weight-loading bars
    assert rc == 2 and last.startswith("interp probe: error: ") and message in last
