"""Tasks from the tokenizer and their ICL, shuffled-label and zero-shot prompts."""

import pytest

import interp
from interp.function_vectors import TASKS, Task, Template, icl_prompts, load_pairs, make_task, zero_shot_prompts


def test_builtin_word_lists_ship_with_the_package():
    for name in TASKS:
        pairs = load_pairs(name)
        assert len(pairs) >= 20 and all(x and y for x, y in pairs)
    assert ("France", "Paris") in load_pairs("country_capital") and ("hot", "cold") in load_pairs("antonyms")
    with pytest.raises(KeyError, match="task='synonyms'"):
        load_pairs("synonyms")


def test_only_single_token_pairs_are_kept(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))  # character-level tokenizer: one character is one token
    task = make_task(model, "next_number")
    assert task.pairs == [(str(i), str(i + 1)) for i in range(9)] and task.dropped == 190
    assert task.template.space == ""  # " 3" is two tokens here, "3" one: the space moved into the markers
    for (x, y), xi, yi in zip(task.pairs, task.x_ids, task.y_ids):
        assert model.to_tokens(x, prepend_bos=False)[0].tolist() == [xi]
        assert model.to_tokens(y, prepend_bos=False)[0].tolist() == [yi]
    with pytest.raises(ValueError, match="only 0 of"):
        Task.from_pairs(model, "words", [("hot", "cold")] * 3, Template())


def test_prompts_spell_the_template_and_shuffle_only_labels(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    task = make_task(model, "next_letter")
    clean = icl_prompts(task, model, 5, 4, seed=1)
    corrupt = icl_prompts(task, model, 5, 4, seed=1, shuffle_labels=True)
    assert clean.tokens.shape == corrupt.tokens.shape and clean.queries == corrupt.queries
    assert (clean.answers == corrupt.answers).all()
    for i, text in enumerate(clean.texts):
        assert model.to_tokens(text)[0].tolist() == clean.tokens[i].tolist()  # the ids spell the string
        assert text.count("Q: ") == 5 and text.endswith("\nA: ")
        blocks = text.split("\n\n")
        demos = [b.split("\nA: ") for b in blocks[:-1]]
        assert all(chr(ord(x[-1]) + 1) == y for x, y in demos)  # true labels
        shuffled = [b.split("\nA: ") for b in corrupt.texts[i].split("\n\n")[:-1]]
        assert [x for x, _ in shuffled] == [x for x, _ in demos]  # same inputs
        assert sorted(y for _, y in shuffled) == sorted(y for _, y in demos)  # labels permuted among themselves
        assert [y for _, y in shuffled] != [y for _, y in demos]
        assert blocks[-1] == f"Q: {task.pairs[clean.queries[i]][0]}\nA: "
        assert task.pairs[clean.queries[i]][0] not in [x[-1] for x, _ in demos]
    zs = zero_shot_prompts(task, model)
    assert zs.texts[0] == "Q: a\nA: " and zs.tokens.shape[0] == len(task) == 25
    with pytest.raises(ValueError, match="n_demos=25"):
        icl_prompts(task, model, 1, 25)
    with pytest.raises(ValueError, match="n_prompts"):
        icl_prompts(task, model, 0)
