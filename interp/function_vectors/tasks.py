"""In-context tasks and their prompts, built offline from a model's tokenizer (Todd et al. 2024, "Function Vectors in
Large Language Models", ICLR; section 2 and appendix C).

A task is a list of (input, output) word pairs. Four are built in: ``antonyms`` and ``country_capital`` (word lists
shipped as package data, ``data/*.txt``), ``next_letter`` (a -> b, ..., y -> z) and ``next_number`` (0 -> 1, ...,
198 -> 199). Only pairs whose input and output are single tokens of the model's tokenizer (with the template's
leading space) are kept, so the answer is one token and every prompt of a task has the same length.

Prompts follow the paper's template, ``Q: x\\nA: y\\n\\n`` per demonstration and ``Q: x_q\\nA:`` for the query:

- clean ICL prompt: ``n_demos`` demonstrations and a query, all distinct pairs;
- corrupted ICL prompt: the same demonstrations with their labels shuffled among themselves (x_i -> y_pi(i)), the
  same query (the paper's "shuffled labels" prompts, on which the CIE is measured);
- zero-shot prompt: the query alone, ``Q: x\\nA:``.

Token ids are assembled piece by piece (the template's pieces tokenized once, each word as its single token), so a
task's prompts all have one length; for SmolLM2 this equals tokenizing the whole string
(``tests/function_vectors/test_fv_smollm2.py``).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from importlib import resources

import torch
from torch import Tensor

__all__ = ["TASKS", "TEMPLATES", "Template", "Task", "Prompts", "load_pairs", "make_task", "icl_prompts",
           "zero_shot_prompts"]

TASKS = ("antonyms", "country_capital", "next_letter", "next_number")
"""Names of the built-in tasks."""


def _file_pairs(name: str) -> list[tuple[str, str]]:
    text = resources.files("interp.function_vectors").joinpath("data", name).read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            x, y = line.split("\t")
            pairs.append((x.strip(), y.strip()))
    return pairs


def load_pairs(task: str) -> list[tuple[str, str]]:
    """The (input, output) word pairs of a built-in task, before any tokenizer filtering."""
    if task == "antonyms":
        return _file_pairs("antonyms.txt")
    if task == "country_capital":
        return _file_pairs("capitals.txt")
    if task == "next_letter":
        return [(a, b) for a, b in zip(string.ascii_lowercase, string.ascii_lowercase[1:])]
    if task == "next_number":
        return [(str(i), str(i + 1)) for i in range(199)]
    raise KeyError(f"task={task!r} is not a built-in task; expected one of {', '.join(TASKS)} (or build one with "
                   "Task.from_pairs)")


@dataclass(frozen=True)
class Template:
    """The prompt template: ``{query}{space}x{answer}{space}y{sep}`` per demonstration (Todd et al.'s
    ``Q: x\\nA: y\\n\\n``)."""

    query: str = "Q:"
    """Text before each input."""
    answer: str = "\nA:"
    """Text between an input and its output."""
    sep: str = "\n\n"
    """Text after each demonstration."""
    space: str = " "
    """Prefix of every word (its token is the word with this prefix; ``""`` for character-level tokenizers)."""

    def text(self, demos: list[tuple[str, str]], query: str) -> str:
        """The prompt as a string (what the token ids spell)."""
        s = self.space
        body = "".join(f"{self.query}{s}{x}{self.answer}{s}{y}{self.sep}" for x, y in demos)
        return f"{body}{self.query}{s}{query}{self.answer}"


TEMPLATES = (Template(), Template(query="Q: ", answer="\nA: ", space=""))
"""The templates :meth:`Task.from_pairs` tries: the paper's, and the same text with the space in the markers."""


def _single_token(model, word: str) -> int | None:
    ids = model.to_tokens(word, prepend_bos=False)[0].tolist()
    return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class Task:
    """An in-context task: word pairs whose input and output are single tokens of one model."""

    name: str
    pairs: list[tuple[str, str]]
    """The kept (input, output) pairs."""
    x_ids: list[int]
    """Token id of each input (with the template's space)."""
    y_ids: list[int]
    """Token id of each output."""
    template: Template = field(default_factory=Template)
    dropped: int = 0
    """Pairs left out because a word is not one token."""

    @classmethod
    def from_pairs(cls, model, name: str, pairs, template: Template | None = None) -> Task:
        """Keep the pairs whose input and output are single tokens of ``model`` (with ``template.space``).

        ``template`` None: of :data:`TEMPLATES` (the space inside each word's token, or inside the markers: e.g.
        SmolLM2 writes `` 3`` as two tokens but ``3`` as one), the first that keeps the most pairs."""
        if template is None:
            tasks = []
            for candidate in TEMPLATES:
                try:
                    tasks.append(cls.from_pairs(model, name, pairs, candidate))
                except ValueError as err:
                    last = err
            if not tasks:
                raise last
            return max(tasks, key=len)  # max keeps the first of equals
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        kept, xs, ys = [], [], []
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(w, str) for w in pair)):
                raise TypeError(f"pairs: {pair!r} is not an (input, output) pair of strings")
            x, y = (_single_token(model, template.space + w) for w in pair)
            if x is not None and y is not None:
                kept.append(tuple(pair))
                xs.append(x)
                ys.append(y)
        if len(kept) < 3:
            raise ValueError(f"task {name!r}: only {len(kept)} of {len(pairs)} pairs are single tokens of this "
                             f"model's tokenizer (with space {template.space!r}); at least 3 are needed")
        return cls(name, kept, xs, ys, template, len(pairs) - len(kept))

    def __len__(self) -> int:
        return len(self.pairs)

    def pieces(self, model) -> tuple[list[int], list[int], list[int]]:
        """Token ids of the template's pieces as they tokenize in context: the first query marker (with the model's
        BOS, if it adds one), separator + query marker (tokenized together: BPE merges across them, e.g. SmolLM2's
        ``"\\n\\n"`` before ``Q`` is two tokens) and the answer marker."""
        t = self.template
        first = model.to_tokens(t.query)[0].tolist()
        between, ans = (model.to_tokens(p, prepend_bos=False)[0].tolist() for p in (t.sep + t.query, t.answer))
        return first, between, ans


def make_task(model, name: str, template: Template | None = None) -> Task:
    """A built-in task (see :data:`TASKS`) for ``model``'s tokenizer."""
    return Task.from_pairs(model, name, load_pairs(name), template)


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts of one task, all the same length."""

    tokens: Tensor
    """``[n, pos]`` token ids."""
    answers: Tensor
    """``[n]`` the correct output's token id (of the query)."""
    texts: list[str]
    """The prompts as strings."""
    queries: list[int]
    """Index into ``task.pairs`` of each prompt's query."""


def _build(task: Task, model, rows: list[tuple[list[int], int, list[int] | None]]) -> Prompts:
    """``rows``: (demo pair indices, query index, demo label indices or None for the true labels)."""
    first, between, ans = task.pieces(model)
    tokens, texts = [], []
    for demos, q, labels in rows:
        labels = demos if labels is None else labels
        ids: list[int] = list(first)
        for d, lab in zip(demos, labels):
            ids += [task.x_ids[d]] + ans + [task.y_ids[lab]] + between
        ids += [task.x_ids[q]] + ans
        tokens.append(ids)
        texts.append(task.template.text([(task.pairs[d][0], task.pairs[lab][1]) for d, lab in zip(demos, labels)],
                                        task.pairs[q][0]))
    answers = torch.tensor([task.y_ids[q] for _, q, _ in rows])
    return Prompts(torch.tensor(tokens), answers, texts, [q for _, q, _ in rows])


def _check_count(value, arg: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{arg} must be an int >= {minimum}; got {value!r}")
    return value


def icl_prompts(task: Task, model, n_prompts: int, n_demos: int = 10, *, seed: int = 0,
                shuffle_labels: bool = False) -> Prompts:
    """``n_prompts`` ICL prompts of ``n_demos`` demonstrations and a query (distinct pairs, drawn with ``seed``).
    ``shuffle_labels``: the corrupted prompts, the demonstrations' outputs permuted among them (never the identity
    when there are at least two demonstrations); the same seed gives the same demonstrations and queries either way.
    """
    _check_count(n_prompts, "n_prompts", 1)
    _check_count(n_demos, "n_demos", 0)
    if n_demos + 1 > len(task):
        raise ValueError(f"n_demos={n_demos}: task {task.name!r} has {len(task)} single-token pairs, so at most "
                         f"{len(task) - 1} demonstrations fit beside the query")
    rng = random.Random(seed)
    rows = []
    for _ in range(n_prompts):
        chosen = rng.sample(range(len(task)), n_demos + 1)
        demos, q = chosen[:-1], chosen[-1]
        perm = list(demos)
        rng.shuffle(perm)
        if shuffle_labels and n_demos > 1 and perm == demos:
            perm = perm[1:] + perm[:1]  # no extra draw: the clean and corrupted sets stay aligned
        rows.append((demos, q, perm if shuffle_labels else None))
    return _build(task, model, rows)


def zero_shot_prompts(task: Task, model) -> Prompts:
    """One zero-shot prompt ``Q: x\\nA:`` per pair of the task."""
    return _build(task, model, [([], q, None) for q in range(len(task))])
