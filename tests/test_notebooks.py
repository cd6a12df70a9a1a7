"""The notebooks stay in sync with their plain-text twins and run against the code."""

import os

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["quickstart", "thesis_figures"]
PICTURES = {"quickstart": 8, "thesis_figures": 2}  # images each notebook shows


def _sources(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_matches_its_py_twin(name):
    py = jupytext.read(os.path.join(ROOT, "experiments", f"{name}.py"))
    ipynb = nbformat.read(os.path.join(ROOT, "experiments", f"{name}.ipynb"), as_version=4)
    assert _sources(py) == _sources(ipynb), f"run: jupytext --sync experiments/{name}.py"


@pytest.mark.e2e
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    nb = jupytext.read(os.path.join(ROOT, "experiments", f"{name}.py"))
    monkeypatch.setenv("JAXSHRINK_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    images = sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )
    assert images == PICTURES[name]  # every picture was produced and shown
