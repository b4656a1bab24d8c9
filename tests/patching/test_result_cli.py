"""``sweep`` -> PatchResult (JSON, HTML, plot) and the ``interp patch`` verb."""

import json

import pytest
import torch

from interp import patching
from interp.cli import main


@pytest.mark.parametrize("site", ["resid", "heads_by_pos", "pattern_by_dest", "heads"])
def test_sweep_result(tiny, site, tmp_path):
    model = tiny("llama")
    result = patching.sweep(model, "The cat sat", "The dog sat", patching.logit_diff(" ", "e"), site, progress=False)
    torch.testing.assert_close(result.values, patching.patch_activations(
        model, "The cat sat", "The dog sat", patching.logit_diff(" ", "e"), site, progress=False))
    norm, first = result.normalized(), (0,) * result.values.ndim
    gap = result.clean_metric - result.corrupt_metric
    assert float(norm[first]) == pytest.approx((float(result.values[first]) - result.corrupt_metric) / gap)
    data = json.loads(result.to_json())
    assert data["axes"] == list(result.axes) and data["clean_str_tokens"][1] == "T"
    page = result.save_html(tmp_path / "p.html").read_text()
    assert "<script src" not in page and "Activation patching" in page
    assert result.plot().data[0].z.shape[0] == model.n_layers


def test_patch_cli(tiny_dir, tmp_path, capsys):
    path = tiny_dir("llama", seed=1, initializer_range=0.3)
    argv = ["patch", "--model", str(path), "--clean", "The cat sat", "--corrupt", "The dog sat", "--answer", " ",
            "--wrong", "e", "--site", "attn_out", "--out", str(tmp_path / "p.html"), "--json", str(tmp_path / "p.json"),
            "--quiet"]
    assert main(argv) == 0
    assert "patched attn_out over 2 x 12 cells" in capsys.readouterr().out
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["values"]) == 2 and len(data["values"][0]) == 12
    assert (tmp_path / "p.html").read_text().startswith("<!DOCTYPE html>")
    bad = argv[:]
    bad[bad.index("--corrupt") + 1] = "The dogs sat"
    assert main(bad) == 2
    assert "clean and corrupt token lengths differ" in capsys.readouterr().err
    bad = argv[:]
    bad[bad.index("--site") + 1] = "ssm_state"
    assert main(bad) == 2
    assert "no 'ssm_state' site" in capsys.readouterr().err
