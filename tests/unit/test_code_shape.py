"""The shape the packages keep: no class over 200 lines, no function over 60, and imports
only from the same layer or a lower one (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"i2tt_server": ROOT / "server" / "i2tt_server",
            "i2tt_client": ROOT / "client" / "i2tt_client"}
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 60

# Each module's layer, lowest first; a module may import from its own layer or lower ones.
# A module is matched by its longest listed prefix (a package covers its modules).
LAYERS = {
    "i2tt_server": [
        ["__init__", "errors", "text", "images", "weights_layout", "page_cleanup", "shm",
         "metrics"],
        ["lines"],
        ["runners"],
        ["execution", "step_scheduler"],
        ["inflight_adapter"],
        ["triton_adapter", "pages_adapter", "weights"],
        ["repository"],
        ["triton_binary", "serve_options", "model_processes"],
        ["triton_http", "tls_proxy", "watchdog", "triton_process"],
        ["launcher"],
        ["cli", "__main__"],
    ],
    "i2tt_client": [
        ["errors", "effects", "deadlines", "options"],
        ["results", "inputs"],
        ["operations", "draw", "settings"],
        ["flows", "batches"],
        ["base"],
        ["client", "aio"],
        ["__init__"],
        ["cli", "__main__"],
    ],
}


def modules(package: str):
    for path in sorted(PACKAGES[package].rglob("*.py")):
        relative = path.relative_to(PACKAGES[package]).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def layer_of(package: str, module: str) -> int:
    best, found = -1, None
    for rank, names in enumerate(LAYERS[package]):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), rank
    assert found is not None, f"{package}.{module} has no layer: add it to LAYERS"
    return found


def imported_modules(package: str, module: str, tree: ast.Module):
    """The package's own modules that ``tree`` imports (absolute or relative)."""
    is_package = (PACKAGES[package] / module.replace(".", "/") / "__init__.py").exists()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == package:
                target = node.module.split(".")[1:]
                names = [target + [alias.name] for alias in node.names]
            else:
                continue
            for name in names:
                # `from . import x` names a module; `from .x import y` names x
                as_module = ".".join(name)
                yield as_module if _is_module(package, as_module) else ".".join(name[:-1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    yield ".".join(alias.name.split(".")[1:])


def _is_module(package: str, dotted: str) -> bool:
    path = PACKAGES[package] / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def long_definitions(tree: ast.Module):
    for node in ast.walk(tree):
        length = (node.end_lineno or node.lineno) - node.lineno + 1 \
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else 0
        if isinstance(node, ast.ClassDef) and length > MAX_CLASS_LINES:
            yield f"class {node.name} ({length} lines, line {node.lineno})"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and length > MAX_FUNCTION_LINES:
            yield f"function {node.name} ({length} lines, line {node.lineno})"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_class_or_function_is_too_long(package):
    found = [f"{path.relative_to(ROOT)}: {what}" for _, path in modules(package)
             for what in long_definitions(ast.parse(path.read_text()))]
    assert found == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_run_down_the_layers_only(package):
    upward = []
    for module, path in modules(package):
        rank = layer_of(package, module)
        for imported in imported_modules(package, module, ast.parse(path.read_text())):
            if imported and layer_of(package, imported) > rank:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_the_checks_find_what_they_look_for():
    tree = ast.parse("class A:\n" + "    x = 1\n" * 201 + "def f():\n" + "    pass\n" * 60)
    assert [w.split(" (")[0] for w in long_definitions(tree)] == ["class A", "function f"]
    tree = ast.parse("from ..cli import main\nfrom . import base\n")
    assert list(imported_modules("i2tt_server", "runners.blip", tree)) == ["cli", "runners.base"]
    assert layer_of("i2tt_server", "cli") > layer_of("i2tt_server", "runners.blip")
