"""The ``interp trace`` verb."""

import json

from interp.cli import main


def test_trace_cli(tiny_dir, tmp_path, capsys):
    path = tiny_dir("mamba", seed=2, initializer_range=0.3)
    argv = ["trace", "--model", str(path), "--prompt", "The Eiffel Tower is in Paris", "--subject", "Eiffel Tower",
            "--samples", "3", "--site", "ssm", "--window", "2", "--out", str(tmp_path / "t.html"), "--json",
            str(tmp_path / "t.json"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "P clean" in out and "total effect" in out
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["site"] == "ssm" and data["samples"] == 3 and len(data["scores"]) == 2
    assert "<script src" not in (tmp_path / "t.html").read_text()
    argv[argv.index("--subject") + 1] = "Louvre"
    assert main(argv) == 2
    assert "subject 'Louvre' is not in the prompt" in capsys.readouterr().err
