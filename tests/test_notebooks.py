"""Every notebook in notebooks/ runs top to bottom headless (nbclient, this interpreter's kernel) at the small sizes
``CI=true`` selects, fails on any cell error, is stored without outputs, and exports to an HTML page that renders its
plotly figures offline in headless Chromium."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_the_workflows():
    assert [p.stem for p in NOTEBOOKS] == ["01_tour", "02_head_discovery", "03_patching", "04_causal_tracing",
                                           "05_sae", "06_probes", "07_from_transformer_lens",
                                           "09_function_vectors", "10_lenses"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), \
        f"{path.name} holds outputs; clear them before committing"


def _export_html(nb, path: Path) -> Path:
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits these: small sizes, and plotly figures as HTML with plotly.js inlined once (offline pages)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PLOTLY_RENDERER", "notebook")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the test workers already use every core
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = sum("plotly" in json.dumps(o.get("data", {})) and "Plotly.newPlot" in str(o.get("data", {}))
                  for o in outputs)
    assert figures >= 1, f"{path.name} showed no plotly figure"

    from interp.reports.browser import find_chromium, render

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium package")
        return
    page = _export_html(nb, tmp_path / f"{path.stem}.html")
    shown = render(page, out_dir=tmp_path, height=4000, budget_ms=30000)
    assert shown.plotly_figures() >= 1, f"{path.name}: no plotly figure rendered in the exported page"
    assert shown.ink_fraction() > 0.01
