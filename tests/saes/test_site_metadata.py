"""SAE files know where they belong: cfg.json records model, site, context and data in SAELens's metadata fields;
``load`` takes all three folder kinds; every tool uses the recorded site and refuses another one."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch

import interp
from interp.cli import main as interp_main
from interp.saes import (
    SAEMetadata,
    SiteMismatchError,
    TopKSAE,
    TopKTranscoder,
    TrainConfig,
    evaluate,
    load,
    resolve_sites,
    train,
)

SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(f"Document {i}: the cat sat on mat number {i * 7 % 13}." for i in range(60)))
    return path


@pytest.fixture(scope="module")
def run(tiny_dir, corpus, tmp_path_factory):
    """A small SAE trained on the tiny Llama at SITE, with two checkpoints."""
    ck = tmp_path_factory.mktemp("run") / "ck"
    cfg = TrainConfig(site=SITE, d_sae=48, k=4, model=str(tiny_dir("llama")), dataset=str(corpus),
                      context_length=16, model_batch_size=4, batch_size=32, buffer_batches=2, steps=6,
                      checkpoint_dir=str(ck), checkpoint_every=3, progress=False)
    return train(cfg), ck


def test_training_records_the_site_and_model_in_saelens_fields(run, tiny_dir, corpus):
    result, ck = run
    cfg = json.loads((result.checkpoint / "sae" / "cfg.json").read_text())
    meta = cfg["metadata"]
    assert meta["model_name"] == str(tiny_dir("llama")) and meta["hook_name"] == SITE
    assert meta["context_size"] == 16 and meta["prepend_bos"] is True and meta["dataset_path"] == str(corpus)
    assert meta["exclude_special_tokens"] is True and "hook_name_out" not in meta and "hook_head_index" not in meta
    assert cfg["normalize_activations"] == "none"
    assert result.sae.metadata == SAEMetadata(model_name=str(tiny_dir("llama")), hook_name=SITE, context_size=16,
                                              prepend_bos=True, dataset_path=str(corpus), exclude_special_tokens=True)


def test_load_takes_sae_checkpoint_and_run_folders(run, tmp_path):
    result, ck = run
    own = result.sae.save(tmp_path / "sae")
    folders = {"sae folder": own, "checkpoint folder": result.checkpoint, "checkpoint_dir": ck,
               "checkpoint sae/": result.checkpoint / "sae"}
    x = torch.randn(5, result.sae.cfg.d_in)
    for kind, folder in folders.items():
        back = load(folder)
        assert back.cfg == result.sae.cfg and back.metadata == result.sae.metadata, kind
        torch.testing.assert_close(back(x).x_hat, result.sae(x).x_hat, rtol=0, atol=0)
    older = sorted(ck.glob("step_*"))[0]  # an earlier checkpoint loads as itself, not as the latest
    assert not torch.equal(load(older).W_dec, load(ck).W_dec)
    with pytest.raises(FileNotFoundError,
                       match=r"path must be an SAE folder with cfg.json .*checkpoint folder.*latest.json.*"
                             r"nothing is none"):
        load(tmp_path / "nothing")


def test_saelens_reads_our_metadata_and_we_read_theirs(run, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    result, _ = run
    folder = result.sae.save(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(folder))
    m = theirs.cfg.metadata
    assert (m.model_name, m.hook_name, m.context_size, m.prepend_bos) == (result.sae.metadata.model_name, SITE, 16,
                                                                          True)
    assert m.dataset_path == result.sae.metadata.dataset_path and m.hook_head_index is None
    assert theirs.cfg.normalize_activations == "none"
    # and back: SAELens writes the metadata it holds; we read it (the SAELens folder round-trips our fields)
    theirs.cfg.metadata.neuronpedia_id = "tiny/1-res"
    theirs.save_model(str(tmp_path / "theirs"))
    back = load(tmp_path / "theirs")
    assert back.metadata.hook_name == SITE and back.metadata.context_size == 16
    assert back.metadata.extra["neuronpedia_id"] == "tiny/1-res"
    back.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "cfg.json").read_text())["metadata"]["neuronpedia_id"] == "tiny/1-res"


def test_the_issue_snippet_refuses_another_site_naming_both(run, tiny_dir):
    result, _ = run
    model = interp.load_model(str(tiny_dir("llama")))
    toks = torch.randint(4, 100, (2, 12))
    with pytest.raises(SiteMismatchError, match=r"'blocks.0.hook_mlp_out' is not the site this SAE was trained on, "
                                                r"'blocks.1.hook_resid_post'"):
        evaluate(result.sae, model, "blocks.0.hook_mlp_out", toks, progress=False)
    default = evaluate(result.sae, model, tokens=toks, progress=False)  # the recorded site
    explicit = evaluate(result.sae, model, SITE, toks, progress=False)
    assert default.site == SITE and default.to_dict() == explicit.to_dict()
    other = evaluate(result.sae, model, "blocks.0.hook_resid_post", toks, allow_site_mismatch=True, progress=False)
    assert other.site == "blocks.0.hook_resid_post"


def test_the_issue_snippet_verbatim(tiny_dir, tmp_path, capsys):
    """The issue's sites: an SAE trained at blocks.12.hook_resid_post, evaluated at blocks.3.hook_mlp_out, is refused
    before anything runs, by the library and by the CLI, and the message names both sites."""
    model = interp.load_model(str(tiny_dir("llama")))
    sae = TopKSAE(64, 128, k=4)
    sae.metadata = SAEMetadata(model_name=str(tiny_dir("llama")), hook_name="blocks.12.hook_resid_post")
    both = r"'blocks.3.hook_mlp_out' is not the site this SAE was trained on, 'blocks.12.hook_resid_post'"
    with pytest.raises(SiteMismatchError, match=both):
        evaluate(sae, model, "blocks.3.hook_mlp_out", torch.randint(4, 100, (2, 12)), progress=False)
    sae.save(tmp_path / "l12")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 40)
    assert interp_main(["sae", "eval", "--sae", str(tmp_path / "l12"), "--dataset", str(corpus),
                        "--site", "blocks.3.hook_mlp_out"]) == 2
    err = capsys.readouterr().err
    assert re.search("interp sae: error: site " + both, err)


def test_resolve_sites_rules():
    sae = TopKSAE(8, 16, k=2)
    with pytest.raises(ValueError, match="records no site .*pass site="):
        resolve_sites(sae)
    assert resolve_sites(sae, "a") == ("a", "a")  # nothing recorded: any site, no complaint
    sae.metadata = SAEMetadata(hook_name="a")
    assert resolve_sites(sae) == ("a", "a")
    with pytest.raises(TypeError, match="site must be a site name"):
        resolve_sites(sae, ("a", "b"))
    tc = TopKTranscoder(8, 16, k=2, d_out=4)
    tc.metadata = SAEMetadata(hook_name="in", hook_name_out="out")
    assert resolve_sites(tc) == ("in", "out")
    with pytest.raises(SiteMismatchError, match=r"'in' -> 'other' is not the site this transcoder.*'in' -> 'out'"):
        resolve_sites(tc, ("in", "other"))
    assert resolve_sites(tc, ("in", "other"), allow_site_mismatch=True) == ("in", "other")
    with pytest.raises(TypeError, match=r"\(site_in, site_out\) pair"):
        resolve_sites(tc, "in")
    with pytest.raises(ValueError, match="hook_name_out needs hook_name"):
        SAEMetadata(hook_name_out="out")
    with pytest.raises(ValueError, match="context_size must be an int"):
        SAEMetadata(context_size=-1)


def test_cli_eval_uses_the_recorded_model_and_site(run, corpus, capsys, tmp_path):
    result, ck = run
    argv = ["sae", "eval", "--sae", str(ck), "--dataset", str(corpus), "--context-length", "16", "--max-sequences",
            "3", "--json", str(tmp_path / "m.json")]
    assert interp_main(argv) == 0
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["site"] == SITE and written["n_tokens"] > 0
    capsys.readouterr()
    assert interp_main([*argv, "--site", "blocks.0.hook_mlp_out"]) == 2
    err = capsys.readouterr().err
    assert "interp sae: error: site 'blocks.0.hook_mlp_out' is not the site this SAE was trained on, " \
           "'blocks.1.hook_resid_post'" in err and "pass --allow-site-mismatch" in err
    assert interp_main([*argv, "--site", "blocks.0.hook_mlp_out", "--allow-site-mismatch"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["site"] == "blocks.0.hook_mlp_out"
    bare = TopKSAE(64, 32, k=2)
    bare.save(tmp_path / "bare")
    assert interp_main(["sae", "eval", "--sae", str(tmp_path / "bare"), "--dataset", str(corpus)]) == 2
    assert "records no model" in capsys.readouterr().err
