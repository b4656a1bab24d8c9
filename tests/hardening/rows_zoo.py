"""Bad inputs to the model zoo (names, splits, prompts, training configs)."""

from interp import zoo
from interp.zoo.evaluate import recall_accuracy
from interp.zoo.prompts import fact_prompts
from interp.zoo.train import TrainConfig

ROWS = [
    ("path-unknown", lambda e: zoo.path("mamba3-facts"), KeyError,
     r"unknown zoo model 'mamba3-facts'; available: mamba1-facts, mamba2-facts"),
    ("load-unknown", lambda e: zoo.load("gpt2-facts"), KeyError, r"unknown zoo model 'gpt2-facts'"),
    ("facts-split", lambda e: zoo.facts("mamba1-facts", split="test"), ValueError,
     r"split must be 'heldout' or 'train'; got 'test'"),
    ("fact-table-unknown", lambda e: zoo.fact_table("nope"), KeyError, r"unknown zoo model 'nope'"),
    ("template-no-subject", lambda e: fact_prompts(zoo.tokenizer("mamba1-facts"), zoo.fact_table("mamba1-facts"),
                                                   ["the capital is {a}"]), ValueError,
     r"template must contain '\{s\}' and '\{a\}'; got 'the capital is \{a\}'"),
    ("recall-empty", lambda e: recall_accuracy(lambda t: t, []), ValueError, r"prompts is empty"),
    ("train-config-arch", lambda e: TrainConfig(arch="gpt2"), ValueError, r"arch must be 'mamba' or 'mamba2'"),
    ("train-config-steps", lambda e: TrainConfig(steps=0), ValueError, r"steps must be >= 1; got 0"),
]
