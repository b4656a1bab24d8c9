"""``detect`` on the zoo Mamba models (implicit attention): the report runs, says what it found, and skips the kinds
that need an OV circuit with the reason."""

import json
import warnings

import pytest

import interp
from interp import heads, zoo


@pytest.mark.parametrize("name", list(zoo.NAMES))
def test_zoo_report(name, tmp_path):
    model = interp.load_model(zoo.path(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = heads.detect(model, progress=False, name=name, draws=2, repeat_batch=4, validation_batch=4,
                              ngram_batch=4)
    assert report.config.repeat_half == 8 and report.config.retrieval_lengths == (24, 32, 40)  # short probes
    assert report.head_axis == ("head" if model.has_ssm_heads else "channel group")
    assert "OV circuit" in report.skipped["successor"] or "single-token" in report.skipped["successor"]
    for kind in ("induction", "previous_token", "duplicate_token", "ngram"):
        assert report.scores[kind].shape == (model.n_layers, model.n_heads)
        assert report.validation[kind].reason is None
        assert report.validation[kind].verdict.startswith(("causal", "not causal"))
    assert "copying score not measured" in report.details["induction"]["copying_note"]
    assert "retrieval" in report.scores or "reproduced the needle in none" in report.skipped["retrieval"]
    assert len(report.details["retrieval"]["trials"]) == 6
    data = json.loads(report.save_json(tmp_path / "s.json").read_text())
    assert data["n_heads"] == model.n_heads and "skipped" in data["validation"]["successor"]
    assert "Skipped" in report.save_html(tmp_path / "r.html").read_text()
