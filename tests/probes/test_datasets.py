"""The labelled texts the toolkit makes itself, and the README's SVG charts."""

import json

from interp.probes.datasets import NEGATIVE, POSITIVE, sentiment_texts, zoo_fact_texts
from interp.probes.examples import line_svg


def test_sentiment_texts_flip_with_negation(tmp_path):
    data = sentiment_texts()
    assert len(data) == 3200 and len(set(data.texts)) == 3200
    for text, label, word in zip(data.texts, data.labels, data.types):
        assert word in text and (word in POSITIVE) != (word in NEGATIVE)
        assert label == ("positive" if (word in POSITIVE) != (" not " in text) else "negative")
    assert sentiment_texts(10, seed=3).texts == sentiment_texts(10, seed=3).texts
    assert len(sentiment_texts(negation=False)) == 1600
    rows = [json.loads(line) for line in data.write_jsonl(tmp_path / "d.jsonl").read_text().splitlines()]
    assert rows[0] == {"text": data.texts[0], "y": data.labels[0], "word": data.types[0]}


def test_zoo_fact_texts():
    data = zoo_fact_texts("mamba2-facts")
    assert len(data) == 600 and set(data.labels) == {"A-H", "I-P"} and len(set(data.types)) == 40


def test_line_svg(tmp_path):
    path = line_svg([0, 1, 2], {"a": [0.5, 0.7, float("nan")], "b": [0.1, 0.2, 0.3]}, tmp_path / "f.svg",
                    title="t <x>", xlabel="layer", ylabel="acc")
    text = path.read_text()
    assert text.startswith("<svg") and text.count("<polyline") == 2 and "t &lt;x&gt;" in text
