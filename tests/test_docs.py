"""The README and docs/ stay true: short, linked, generated from the measurements, runnable."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT

REPO = Path(ROOT)
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").rglob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
RESULTS = re.compile(r"experiments/results/[\w./*-]+")


def _docs_tables():
    """experiments/docs_tables.py as a module (experiments/ is not a package)."""
    path = REPO / "experiments" / "docs_tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_theses_page_is_made_from_its_json():
    path = REPO / "experiments" / "theses.py"
    spec = importlib.util.spec_from_file_location("theses", path)
    theses = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theses)
    record = json.loads((REPO / "experiments" / "results" / "theses_cpu.json").read_text())
    assert theses.page(record) == (REPO / "docs" / "results" / "theses.md").read_text(), (
        "docs/results/theses.md differs from its JSON: run `python experiments/theses.py --page`"
    )


def test_readme_is_at_most_400_lines():
    assert len(README.read_text().splitlines()) <= 400


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_in_the_repository(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links, not code
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not (path.is_file() and REPO in path.parents):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing in the repository: {broken}"


def test_docs_tables_regenerates_the_performance_page_identically():
    page = REPO / "docs" / "performance.md"
    assert _docs_tables().page() == page.read_text(), (
        "docs/performance.md differs from its JSON: run `python experiments/docs_tables.py`"
    )


def _tables_with_their_sources(text: str):
    """Each markdown table of `text` with the paragraph just above it."""
    blocks = re.split(r"\n\s*\n", text)
    for i, block in enumerate(blocks):
        if block.lstrip().startswith("|"):
            yield block, blocks[i - 1] if i else ""


def test_every_performance_table_names_a_json_that_exists():
    text = (REPO / "docs" / "performance.md").read_text()
    tables = list(_tables_with_their_sources(text))
    assert len(tables) >= 8
    for table, above in tables:
        files = RESULTS.findall(above)
        assert files, f"no experiments/results/ file named above the table:\n{table[:200]}"
        for name in files:
            assert (REPO / name).is_file(), f"{name} (named above a table) does not exist"


def test_every_results_file_the_docs_name_exists():
    for page in [README, *PAGES]:
        for name in RESULTS.findall(page.read_text()):
            name = name.rstrip(".")
            matches = list(REPO.glob(name)) if "*" in name else [REPO / name]
            assert matches and all(m.exists() for m in matches), f"{page.name}: {name}"


def test_no_machine_paths_or_work_item_names():
    for page in [README, *PAGES]:
        text = page.read_text()
        assert not re.search(r"(?<![\w.$])/(tmp|work|home)/", text), page.name
        assert not re.search(r"\bissues? \d+", text, flags=re.I), page.name


def _own_model_block() -> str:
    """The fenced python block under the README's "Your own model" heading."""
    section = README.read_text().split("## Your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "one python block under 'Your own model'"
    return blocks[0]


@pytest.mark.e2e
def test_the_readmes_own_model_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block writes runs/mynet under the current folder
    namespace = {"__name__": "readme_own_model"}
    exec(compile(_own_model_block(), "README.md (Your own model)", "exec"), namespace)
    results = namespace["results"]
    assert results["status"] == "ok"
    assert results["layers"] == ["conv", "hidden", "out"]
    assert results["widths"]["before"] == [8, 32, 10]
    assert (tmp_path / "runs" / "mynet" / "results.json").is_file()
    assert (tmp_path / "runs" / "mynet" / "export" / "params.npz").is_file()
