"""SmolLM2 (integration tier, kept short): prompts equal the tokenized strings; CIEs of two layers against the loop."""

import pytest
import torch

from interp.function_vectors import TASKS, causal_indirect_effects, icl_prompts, make_task, mean_head_outputs

pytestmark = pytest.mark.integration


def test_prompt_ids_equal_the_tokenized_strings(smollm2):
    for name in TASKS:
        task = make_task(smollm2, name)
        for shuffle in (False, True):
            p = icl_prompts(task, smollm2, 3, min(10, len(task) - 1), seed=5, shuffle_labels=shuffle)
            for text, ids in zip(p.texts, p.tokens):
                assert smollm2.to_tokens(text)[0].tolist() == ids.tolist(), (name, text)


def test_cie_equals_the_per_head_loop_on_smollm2(smollm2):
    task = make_task(smollm2, "antonyms")
    means = mean_head_outputs(smollm2, icl_prompts(task, smollm2, 4, 5, seed=0).tokens)
    bad = icl_prompts(task, smollm2, 2, 5, seed=1, shuffle_labels=True)
    cie, _ = causal_indirect_effects(smollm2, bad.tokens, bad.answers, means)
    with torch.no_grad():
        base = smollm2(bad.tokens)[:, -1].softmax(-1).gather(1, bad.answers[:, None])[:, 0]
        for layer in (14, 20):
            for head in range(smollm2.n_heads):
                def patch(act, *, hook, h=head, v=means[layer, head]):
                    act = act.clone()
                    act[:, -1, h] = v
                    return act
                with smollm2.hooks([(smollm2.components(layer)["result"], patch)]):
                    p = smollm2(bad.tokens)[:, -1].softmax(-1).gather(1, bad.answers[:, None])[:, 0]
                assert float(cie[layer, head]) == pytest.approx(float((p - base).mean()), abs=2e-5)
