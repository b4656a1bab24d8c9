"""The zoo: corpus properties, a deterministic training smoke run, and the committed trained models."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from interp import zoo
from interp.zoo import corpus
from interp.zoo.evaluate import copy_accuracy, recall_accuracy
from interp.zoo.prompts import fact_prompts
from interp.zoo.train import TrainConfig, train


def test_corpus_is_seeded_and_keeps_heldout_templates_out():
    facts = corpus.fact_table()
    a = [corpus.train_sequence(random.Random(7), facts, 39) for _ in range(3)]
    b = [corpus.train_sequence(random.Random(7), facts, 39) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    texts = [corpus.train_sequence(rng, facts, 200) for _ in range(1500)]
    for fact in facts[:8]:
        for template in corpus.HELDOUT_TEMPLATES:
            sentence = corpus.fact_sentence(fact, template)
            assert not any(sentence in t for t in texts), sentence
    assert any(corpus.fact_sentence(f, corpus.TRAIN_TEMPLATES[0]) in t for f in facts for t in texts)
    assert len({f.subject for f in facts}) == len(facts) and len({f.subject.split()[0] for f in facts}) < len(facts)


def test_tokenizer_is_word_level_and_roundtrips():
    tok = corpus.build_tokenizer()
    text = "we know that the capital of ka lo is arvon ."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split()) and tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_train_smoke_is_deterministic(tmp_path):
    cfg = TrainConfig(arch="mamba2", steps=3, batch=2, seq_len=16)
    m1 = train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert 0.0 <= m1["recall_heldout_templates"] <= 1.0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]["steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(arch="gpt2")


@pytest.fixture(scope="module", params=sorted(zoo.NAMES))
def zoo_model(request):
    return request.param, zoo.load(request.param)


def test_zoo_folder_is_small_and_offline_loadable(zoo_model):
    name, model = zoo_model
    folder = zoo.path(name)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "facts.json", "metrics.json"):
        assert (folder / f).is_file(), f
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    assert model.arch == zoo.NAMES[name]
    with pytest.raises(KeyError, match="available"):
        zoo.path("gpt5")


def test_fact_prompts_know_their_subject(zoo_model):
    name, model = zoo_model
    prompts = zoo.facts(name)
    assert len(prompts) == len(zoo.fact_table(name)) * len(corpus.HELDOUT_TEMPLATES)
    for p in prompts[:: 7]:
        assert model.to_tokens(p.text)[0].tolist() == list(p.tokens)
        s0, s1 = p.subject_span
        assert model.to_string(p.tokens[s0:s1]) == p.subject
        assert model.tokenizer.convert_ids_to_tokens(p.answer_id) == p.answer
    train = zoo.facts(name, "train", seed=1)
    assert {p.template for p in train} == set(corpus.TRAIN_TEMPLATES)
    with pytest.raises(ValueError, match="split"):
        zoo.facts(name, "test")
    with pytest.raises(ValueError, match="template"):
        fact_prompts(model.tokenizer, zoo.fact_table(name), ["the capital is {a}"])


def test_zoo_model_recalls_heldout_facts_and_copies(zoo_model):
    """The committed models reach the accuracies recorded in metrics.json, through HookedMamba."""
    name, model = zoo_model
    saved = zoo.metrics(name)
    prompts = zoo.facts(name, seed=777)
    recall = recall_accuracy(model, prompts)
    copy = copy_accuracy(model, model.tokenizer, seed=779)
    assert recall == pytest.approx(saved["recall_heldout_templates"], abs=0.01)
    assert copy == pytest.approx(saved["copy_accuracy"], abs=0.01)
    assert recall >= RECALL_MIN[name] and copy >= COPY_MIN[name]


RECALL_MIN = {"mamba1-facts": 0.95, "mamba2-facts": 0.95}
COPY_MIN = {"mamba1-facts": 0.4, "mamba2-facts": 0.4}  # chance is 1/54 (the copy pool)
