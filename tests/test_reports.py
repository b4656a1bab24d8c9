"""Reports are one offline HTML file; results share to_json / save_json / save_html / _repr_html_."""

import json
from dataclasses import dataclass

import pytest

from interp.reports import Result, page, save_html, table_html, to_jsonable


@dataclass
class _Toy(Result):
    values: list
    title = "toy"

    def to_dict(self):
        return {"values": self.values, "nan": float("nan")}

    def plot(self):
        import plotly.graph_objects as go

        return go.Figure(go.Bar(y=self.values))


def test_page_is_self_contained(tmp_path):
    doc = page("T", [("Section", table_html([["a", 1.23456, 3]], header=["k", "v", "n"]))])
    assert "<script src" not in doc and "<script" in doc and "1.235" in doc
    path = save_html(tmp_path / "r.html", doc)
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_result_mixin(tmp_path):
    toy = _Toy([1, 2, 3])
    assert json.loads(toy.to_json()) == {"values": [1, 2, 3], "nan": None}
    assert json.loads(toy.save_json(tmp_path / "t.json").read_text())["values"] == [1, 2, 3]
    html = toy.save_html(tmp_path / "t.html").read_text()
    assert "plotly" in html and "<script src" not in html
    assert "<div" in toy._repr_html_()


def test_to_jsonable_handles_tensors():
    torch = pytest.importorskip("torch")
    assert to_jsonable({1: torch.tensor([1.0, float("inf")])}) == {"1": [1.0, None]}


def test_a_report_renders_offline_in_chromium(chromium, tmp_path):
    from interp.reports.browser import render
    path = _Toy([3, 1, 2]).save_html(tmp_path / "toy.html")
    shown = render(path, out_dir=tmp_path)
    assert shown.plotly_figures() == 1
    assert shown.ink_fraction() > 0.01
