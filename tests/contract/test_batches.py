"""Batches of unequal prompts (attention masks, both padding sides) and losses, on every model kind."""

import pytest
import torch

PROMPTS = ["ab", "The cat sat", "hello, world!"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_equal_their_unpadded_runs(kind, side):
    model = kind.model
    tokens, mask = model.to_tokens(PROMPTS, padding_side=side, return_attention_mask=True)
    assert mask.shape == tokens.shape and mask.dtype == torch.long
    logits = model(tokens, attention_mask=mask)
    last = model.last_positions(mask)
    for row, text in enumerate(PROMPTS):
        alone = model(model.to_tokens(text))[0]
        n = alone.shape[0]
        assert int(mask[row].sum()) == n
        real = logits[row, -n:] if side == "left" else logits[row, :n]
        torch.testing.assert_close(real, alone, atol=1e-4, rtol=0)
        torch.testing.assert_close(logits[row, last[row]], alone[-1], atol=1e-4, rtol=0)


def test_text_input_pads_and_masks_by_itself(kind):
    model = kind.model
    logits = model(PROMPTS)
    tokens, mask = model.to_tokens(PROMPTS, return_attention_mask=True)
    torch.testing.assert_close(logits, model(tokens, attention_mask=mask))


def test_padding_without_a_mask_warns(kind):
    with pytest.warns(UserWarning, match="attention_mask"):
        kind.model.to_tokens(PROMPTS)


def test_cache_and_patterns_take_the_mask(kind):
    model = kind.model
    tokens, mask = model.to_tokens(PROMPTS, padding_side="left", return_attention_mask=True)
    site = model.components(0)["resid_post"]
    logits, cache = model.run_with_cache(tokens, names_filter=site, attention_mask=mask)
    torch.testing.assert_close(logits, model(tokens, attention_mask=mask))
    alone = model.run_with_cache(model.to_tokens(PROMPTS[0]), names_filter=site)[1][site][0]
    torch.testing.assert_close(cache[site][0, -alone.shape[0]:], alone, atol=1e-4, rtol=0)
    pats = model.attention_patterns(tokens, attention_mask=mask, layers=[0])
    n = alone.shape[0]
    ref = model.attention_patterns(model.to_tokens(PROMPTS[0]), layers=[0])[:, 0]
    torch.testing.assert_close(pats[:, 0, :, -n:, -n:], ref, atol=1e-4, rtol=0)


def test_losses(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (2, 9))
    logits = model(tokens)
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(2, 8)
    torch.testing.assert_close(model(tokens, return_type="loss"), per_token.mean())
    torch.testing.assert_close(model(tokens, return_type="loss", loss_per_token=True), per_token)
    both_logits, both_loss = model(tokens, return_type="both")
    torch.testing.assert_close(both_logits, logits)
    torch.testing.assert_close(both_loss, per_token.mean())
    with pytest.raises(ValueError, match="return_type"):
        model(tokens, return_type="probs")


def test_loss_ignores_padding(kind):
    model = kind.model
    tokens, mask = model.to_tokens(PROMPTS, padding_side="left", return_attention_mask=True)
    batched = model(tokens, attention_mask=mask, return_type="loss", loss_per_token=True)
    for row, text in enumerate(PROMPTS):
        alone = model(model.to_tokens(text), return_type="loss", loss_per_token=True)[0]
        n_pad = batched.shape[1] - alone.shape[0]
        torch.testing.assert_close(batched[row, n_pad:], alone, atol=1e-4, rtol=0)
        assert torch.all(batched[row, :n_pad] == 0)  # no target there
    mean = model(tokens, attention_mask=mask, return_type="loss")
    torch.testing.assert_close(mean, batched.sum() / (mask[:, 1:] * mask[:, :-1]).sum(), atol=1e-5, rtol=0)
