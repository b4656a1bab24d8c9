"""``generate`` with TransformerLens's keywords: return_type, verbose, use_past_kv_cache, prepend_bos, padding_side and
freq_penalty (checked against plain loops), and the aliases refusing to disagree."""

import pytest
import torch


def _tokens(model, b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, t), generator=g)


def _penalised_loop(model, tokens, n, freq_penalty, temperature=1.0):
    """The reference: a full forward pass per step, logits / temperature - freq_penalty * (count of each token in the
    row so far), argmax."""
    seq = tokens
    for _ in range(n):
        logits = model(seq)[:, -1].float() / temperature
        counts = torch.stack([torch.bincount(row, minlength=logits.shape[-1]) for row in seq]).float()
        seq = torch.cat([seq, (logits - freq_penalty * counts).argmax(-1, keepdim=True)], 1)
    return seq


def test_freq_penalty_matches_a_reference_loop(kind):
    model = kind.model
    tokens = _tokens(model)
    first = model(tokens)[:, -1]
    fp = float(first.max() - first.min())  # the logits' range: a token seen once loses to any unseen one
    plain = model.generate(tokens, max_new_tokens=6, stop_at_eos=False)
    out = model.generate(tokens, max_new_tokens=6, stop_at_eos=False, freq_penalty=fp)
    assert torch.equal(out, _penalised_loop(model, tokens, 6, fp))
    assert not torch.equal(out, plain)  # the penalty changed something (tiny random models repeat themselves)
    # sampling: the penalty comes after the division by temperature (TransformerLens), so a low temperature makes
    # it small against the logits; top_k=1 makes the sample an argmax
    sampled = model.generate(tokens, max_new_tokens=6, stop_at_eos=False, freq_penalty=fp, do_sample=True,
                             temperature=0.01, top_k=1, seed=0)
    assert torch.equal(sampled, _penalised_loop(model, tokens, 6, fp, temperature=0.01))
    assert not torch.equal(sampled, out)


def test_freq_penalty_counts_real_tokens_only(_kinds):
    model = _kinds("llama").model
    real = _tokens(model, b=1)
    first = model(real)[:, -1]
    fp = float(first.max() - first.min())
    nxt = model.generate(real, max_new_tokens=1, stop_at_eos=False, freq_penalty=fp)[:, -1:]
    padded = torch.cat([nxt.repeat(1, 3), real], 1)  # padding made of the very token chosen next
    mask = torch.tensor([[0, 0, 0] + [1] * real.shape[1]])
    out = model.generate(padded, max_new_tokens=1, stop_at_eos=False, freq_penalty=fp, attention_mask=mask)
    assert torch.equal(out[:, -1:], nxt)  # counted, the three pads would sink it by 3 fp (below every logit)
    texts = ["ab", "ab cd ef gh"]
    batch = model.generate(texts, max_new_tokens=4, stop_at_eos=False, freq_penalty=fp, return_type="str")
    alone = [model.generate(t, max_new_tokens=4, stop_at_eos=False, freq_penalty=fp, return_type="str") for t in texts]
    assert batch == alone


def test_return_type(kind):
    model = kind.model
    tok = model.tokenizer
    text, texts = "ab cd", ["ab", "ab cd ef"]
    kw = dict(max_new_tokens=3, stop_at_eos=False)
    ids = model.generate(text, **kw)  # the default: ids, whatever the input
    assert isinstance(ids, torch.Tensor) and torch.equal(ids, model.generate(text, return_type="tokens", **kw))
    want = tok.decode(ids[0].tolist(), skip_special_tokens=True)
    assert model.generate(text, return_type="input", **kw) == want
    assert model.generate(text, return_type="str", **kw) == want
    batch_ids = model.generate(texts, **kw)
    _, mask = model.to_tokens(texts, padding_side="left", return_attention_mask=True)
    mask = torch.cat([mask, torch.ones(len(texts), 3, dtype=mask.dtype)], 1).bool()
    wants = [tok.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(batch_ids, mask)]
    assert model.generate(texts, return_type="input", **kw) == wants
    assert model.generate(texts, return_type="str", padding_side="right", **kw) == wants  # always left-padded
    tokens = _tokens(model)
    out = model.generate(tokens, return_type="input", **kw)
    assert torch.equal(out, model.generate(tokens, **kw))
    strs = model.generate(tokens, return_type="str", **kw)
    assert strs == [tok.decode(row.tolist(), skip_special_tokens=True) for row in out]
    assert model.generate(tokens[:1], return_type="str", **kw) == strs[:1]  # a list for ids, one row or many


def test_prepend_bos_passes_to_to_tokens(_kinds):
    model = _kinds("llama").model
    kw = dict(max_new_tokens=2, stop_at_eos=False)
    for bos in (True, False):
        prompt = model.to_tokens("ab cd", prepend_bos=bos)
        out = model.generate("ab cd", prepend_bos=bos, **kw)
        assert torch.equal(out[:, : prompt.shape[1]], prompt) and out.shape[1] == prompt.shape[1] + 2
    with_bos, without = (model.to_tokens("ab cd", prepend_bos=b) for b in (True, False))
    assert with_bos.shape[1] == without.shape[1] + 1


def test_verbose_and_progress_show_a_bar(_kinds, capsys):
    model = _kinds("llama").model
    tokens = _tokens(model)
    model.generate(tokens, max_new_tokens=2, stop_at_eos=False)
    assert "generate" not in capsys.readouterr().err  # off by default (TransformerLens's verbose defaults on)
    for kw in ({"verbose": True}, {"progress": True}):
        model.generate(tokens, max_new_tokens=2, stop_at_eos=False, **kw)
        assert "generate" in capsys.readouterr().err
    model.generate(tokens, max_new_tokens=2, stop_at_eos=False, verbose=False)
    assert "generate" not in capsys.readouterr().err


def test_use_past_kv_cache_is_use_cache(_kinds):
    model = _kinds("llama").model
    tokens = _tokens(model)
    site = model.components(0)["resid_post"]
    for kw, widths in (({"use_past_kv_cache": False}, [4, 5, 6]), ({"use_past_kv_cache": True}, [4, 1, 1]),
                       ({"use_cache": False, "use_past_kv_cache": False}, [4, 5, 6])):
        seen: list[int] = []
        with model.hooks([(site, lambda a, hook, seen=seen: seen.append(a.shape[1]))]):
            model.generate(tokens, max_new_tokens=3, stop_at_eos=False, **kw)
        assert seen == widths, kw


def test_bad_and_conflicting_keywords(_kinds):
    model = _kinds("llama").model
    tokens = _tokens(model)
    with pytest.raises(TypeError, match="pass progress= or verbose="):
        model.generate(tokens, 2, verbose=True, progress=True)
    with pytest.raises(TypeError, match="pass progress= or verbose="):
        model.generate(tokens, 2, verbose=False, progress=False)
    with pytest.raises(ValueError, match="use_cache=True and use_past_kv_cache=False disagree"):
        model.generate(tokens, 2, use_cache=True, use_past_kv_cache=False)
    with pytest.raises(ValueError, match="return_type must be one of 'tokens', 'str', 'input'; got 'embeds'"):
        model.generate(tokens, 2, return_type="embeds")
    with pytest.raises(ValueError, match="padding_side must be 'left', 'right' or None"):
        model.generate("ab", 2, padding_side="middle")
    with pytest.raises(TypeError, match="prepend_bos must be True, False or None"):
        model.generate("ab", 2, prepend_bos="yes")
    for bad in (float("inf"), "1", True):
        with pytest.raises(ValueError, match="freq_penalty must be a finite number"):
            model.generate(tokens, 2, freq_penalty=bad)
    with pytest.raises(TypeError, match="verbose must be True or False"):
        model.generate(tokens, 2, verbose=1)
