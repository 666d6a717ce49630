"""The layers of the service import downward only (docs and DESIGN: routers -> consumers -> realtime, db,
security -> settings), read from the source's import statements, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import {{ cookiecutter.package_name }}

PACKAGE = {{ cookiecutter.package_name }}.__name__
SOURCE = Path({{ cookiecutter.package_name }}.__file__).parent

# What each layer may import of the service besides itself: the engine nothing, like a library of its own.
ALLOWED = {
    "realtime": set(),
    "security": {"settings"},
    "db": {"security", "settings"},
    "observability": {"realtime", "settings"},
    "consumers": {"realtime", "db", "security", "schemas", "settings"},
    "websocket_protocol": {"realtime"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def imported_parts(path: Path) -> set[str]:
    """The service's top-level modules and packages that this file imports (`db`, `schemas`, ...)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            targets = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            head, _, rest = target.partition(".")
            if head == PACKAGE and rest:
                found.add(rest.partition(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_does_not_import_the_layers_above_it(layer: str) -> None:
    files = sorted((SOURCE / layer).rglob("*.py")) if (SOURCE / layer).is_dir() else [SOURCE / f"{layer}.py"]
    assert files
    allowed = ALLOWED[layer] | {layer}
    wrong = {str(path.relative_to(SOURCE)): sorted(imported_parts(path) - allowed) for path in files}
    assert {path: parts for path, parts in wrong.items() if parts} == {}


def test_relative_imports_resolve_to_the_service_s_modules() -> None:
    """The check above would pass vacuously if it misread relative imports: it sees what `deps` imports."""
    assert {"db", "realtime", "security", "settings"} <= imported_parts(SOURCE / "deps.py")
    assert "realtime" in imported_parts(SOURCE / "consumers" / "base.py")
