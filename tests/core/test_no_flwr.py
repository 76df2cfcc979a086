"""`core/` is the framework-free library: no module may import Flower."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    roots.add(arg.value.split(".")[0])
    return roots


def test_core_never_imports_flwr():
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 10  # the walk really sees the package
    offenders = [str(p.relative_to(CORE)) for p in modules if "flwr" in _imported_roots(p)]
    assert offenders == []


def test_the_walker_detects_flwr_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import os\nfrom flwr.app import Message\n")
    assert "flwr" in _imported_roots(sample)


# docs/architecture.md: each layer imports only the layers below it.
FORBIDDEN = {
    "core": {"flwr", "fl_client", "fl_server", "reproduce", "bench"},
    "fl_client": {"fl_server", "reproduce", "bench"},
    "fl_server": {"reproduce", "bench"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    root = CORE.parent / package
    modules = sorted(root.rglob("*.py"))
    assert modules
    offenders = {
        str(p.relative_to(CORE.parent)): sorted(_imported_roots(p) & FORBIDDEN[package])
        for p in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}
