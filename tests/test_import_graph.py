"""The import graph has no arrow from a lower module to a higher one (docs/architecture.md).

Every module of the package sits in one layer; a module may import (at the top or lazily inside a
function) only from its own layer or lower ones. A new module must be given a layer here and in the doc.
"""

import ast
import os

import tfrobust

# Lowest first. The package root `tfrobust` (its version and lazy public names) is importable by anyone.
LAYERS = [
    ["errors"],
    ["threat_model", "fileio", "numerics", "inspection", "integrity", "config"],
    ["models", "attacks", "augment"],
    ["data"],
    ["export", "generators"],
    ["evaluation"],
    ["training", "importer", "pseudolabel"],
    ["diagnostics", "benchmark", "callbacks", "layers"],
    ["cli"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
ROOT = os.path.dirname(tfrobust.__file__)


def _imports():
    """(importing top-level module, imported top-level module, file) for every tfrobust import."""
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, ROOT)
            if relative == "__init__.py":
                continue
            source = relative.split(os.sep)[0].removesuffix(".py")
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfrobust."):
                    targets = [node.module]
                elif isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names if alias.name.startswith("tfrobust.")]
                else:
                    continue
                for target in targets:
                    yield source, target.split(".")[1], relative


def test_every_module_has_a_layer():
    modules = {
        name.removesuffix(".py")
        for name in os.listdir(ROOT)
        if name != "__init__.py"
        and not name.startswith(("_", "."))
        and (name.endswith(".py") or os.path.isfile(os.path.join(ROOT, name, "__init__.py")))
    }
    assert sorted(modules - set(RANK)) == [], "give each new module a layer in LAYERS and docs/architecture.md"
    assert sorted(set(RANK) - modules) == []


def test_no_module_imports_a_higher_one():
    assert len({(source, target) for source, target, _ in _imports()}) > 40  # the walk sees the package
    upward = sorted(
        {f"{relative}: {source} -> {target}" for source, target, relative in _imports() if RANK[target] > RANK[source]}
    )
    assert upward == []


def test_the_architecture_doc_lists_the_layers():
    with open(os.path.join(os.path.dirname(ROOT), "docs", "architecture.md"), encoding="utf-8") as handle:
        doc = handle.read()
    for rank, names in enumerate(LAYERS):
        line = f"{rank}. " + ", ".join(f"`{name}`" for name in names)
        assert line in doc, line
