"""The package's layout is its architecture: imports flow one way between subpackages,
and no module imports itself back through others.

The rule is read from the source (`ast`), so it holds for imports inside functions too.
"""

import ast
import os
import pathlib

from conftest import ROOT

PACKAGE = pathlib.Path(ROOT) / "jaxshrink"

# Which subpackages each may import from. Everything a package may use lies below it;
# `deploy`, `stats`, `report`, `data` and `bench` are leaves that the core never imports.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "search": {"core"},
    "deploy": {"core", "data"},
    "stats": {"core"},
    "report": {"core", "data", "search"},
    "config": {"core", "data", "search", "deploy"},
    "runtime": {"core", "data", "search", "config", "report"},
    "experiments": {"core", "data", "search", "deploy", "stats", "report", "config", "runtime"},
    "bench": {"core", "data", "search", "deploy", "report", "config", "runtime"},
    "main": {"core", "config", "runtime", "experiments"},
    "__init__": set(),  # the public names are imported lazily, by name, on first use
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, top_level_only: bool = False) -> set[str]:
    """The jaxshrink modules `path` imports (`from jaxshrink.x import y` counts `y` when
    it is a module, else `jaxshrink.x`)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "jaxshrink"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "jaxshrink":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if _exists(sub) else node.module)
    return out


def _exists(module: str) -> bool:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_subpackage_has_a_rule():
    layers = {_layer(_module_name(p)) for p in _sources()}
    assert layers <= set(ALLOWED), sorted(layers - set(ALLOWED))


def test_imports_flow_one_way_between_subpackages():
    upward = []
    for path in _sources():
        importer = _module_name(path)
        for imported in _imports(path):
            a, b = _layer(importer), _layer(imported)
            if a != b and b not in ALLOWED[a]:
                upward.append(f"{importer} imports {imported}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back():
    graph = {_module_name(p): _imports(p, top_level_only=True) for p in _sources()}
    cycles = []

    def visit(node, stack):
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node) :] + [node]))
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            # A package's own __init__ importing its modules is how a package is made.
            if nxt != node and not node.startswith(nxt + "."):
                visit(nxt, stack + [node])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "circular imports:\n" + "\n".join(cycles)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a core module importing the runtime is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from jaxshrink.runtime import job\n")
    assert _imports(bad) == {"jaxshrink.runtime.job"}
    assert "runtime" not in ALLOWED["core"]
    assert os.path.isfile(PACKAGE / "runtime" / "job.py")


def test_the_public_api_is_at_the_top_level():
    import jaxshrink
    from jaxshrink.config import common_config, get_preset
    from jaxshrink.core.models.base import Model
    from jaxshrink.experiments import runner

    assert jaxshrink.Model is Model and jaxshrink.run is runner.run
    assert jaxshrink.common_config is common_config
    sobel = os.path.join(ROOT, "configs", "sobel.py")
    assert jaxshrink.load_config(f"{sobel}:quick").to_dict() == get_preset(
        "sobel", "quick"
    ).to_dict()


def test_a_moved_module_names_its_new_place():
    import importlib

    import pytest

    with pytest.raises(ImportError, match=r"jaxshrink\.pipeline has moved: use jaxshrink\.run"):
        importlib.import_module("jaxshrink.pipeline")
    with pytest.raises(ImportError, match=r"has moved: use jaxshrink\.core\.models"):
        exec("from jaxshrink import models", {})
