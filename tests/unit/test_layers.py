"""The layers of the code, pinned by what each module imports (read from its source, every
``import`` at any depth counted, lazy ones inside functions included):

    wire/, upstream/, hub/  <-  engine/, providers/  <-  routing/  <-  api/  <-  server, cli
    store/ (keys in SQLite)  <-  api/, cli

- ``wire/`` (the API dialects' models) imports nothing else of interference;
- ``upstream/`` (HTTP clients, SSE, error mapping) knows no dialect, provider or route;
- ``hub/`` (hub model names, the hub cache, pulls) knows only the errors: the engine reads its
  cache, the command line and the routes pull through it;
- ``errors`` imports nothing of interference;
- the engine, the providers, the router and the configuration never import ``api/``;
- the engine never imports the providers, the router or the server;
- only ``api/`` and ``server`` import the HTTP server stack (starlette, uvicorn).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "interference"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> set[str]:
    """Every module ``path`` (a file under ``src``) imports, relative imports resolved."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def offenders(selected: Callable[[str], bool], forbidden: tuple[str, ...]) -> list[str]:
    """``module imports forbidden-module`` for each selected module that does."""
    return sorted(
        f"{name} imports {imported}"
        for name, imported_set in MODULES.items()
        if selected(name)
        for imported in imported_set
        if under(imported, *forbidden)
    )


def test_every_module_is_seen() -> None:
    assert "interference.wire.chat" in MODULES
    assert "interference.api.routes" in MODULES
    assert "interference.wire.chat" in MODULES["interference.api.routes"]


def test_wire_imports_nothing_else_of_ours() -> None:
    found = sorted(
        f"{name} imports {imported}"
        for name, imported_set in MODULES.items()
        if under(name, "interference.wire")
        for imported in imported_set
        if under(imported, "interference") and not under(imported, "interference.wire")
    )
    assert found == []


def test_upstream_knows_no_dialect_provider_or_route() -> None:
    """The HTTP clients, SSE decoding and error mapping sit below the providers."""
    assert (
        offenders(
            lambda name: under(name, "interference.upstream"),
            (
                "interference.wire",
                "interference.providers",
                "interference.routing",
                "interference.api",
                "interference.engine",
                "interference.config",
            ),
        )
        == []
    )


def test_the_hub_knows_only_itself_and_the_errors() -> None:
    """``hub/`` sits beside ``upstream/``: no configuration, engine, provider or route (the
    package root only for its version, the User-Agent)."""
    allowed = ("interference.hub", "interference.errors")
    found = sorted(
        f"{name} imports {imported}"
        for name, imported_set in MODULES.items()
        if under(name, "interference.hub")
        for imported in imported_set
        if under(imported, "interference")
        and not under(imported, *allowed)
        and imported not in ("interference", "interference.__version__")
    )
    assert "interference.hub.pull" in MODULES
    assert found == []


def test_config_imports_only_the_errors() -> None:
    """The configuration models are data every layer reads; they depend on nothing of ours
    (but their own parts, ``interference.config.*``)."""
    modules = [name for name in MODULES if under(name, "interference.config")]
    assert len(modules) >= 3
    for name in modules:
        imported = [m for m in MODULES[name] if under(m, "interference")]
        assert all(under(m, "interference.errors") or under(m, "interference.config")
                   for m in imported), (name, imported)  # fmt: skip


def test_errors_import_nothing_of_ours() -> None:
    assert not [m for m in MODULES["interference.errors"] if under(m, "interference")]


def test_the_store_knows_only_itself_the_configuration_and_the_errors() -> None:
    """``store/`` (keys, later usage, in SQLite) is data under the routes: no route, router,
    provider or engine."""
    allowed = ("interference.store", "interference.config", "interference.errors")
    found = sorted(
        f"{name} imports {imported}"
        for name, imported_set in MODULES.items()
        if under(name, "interference.store")
        for imported in imported_set
        if under(imported, "interference") and not under(imported, *allowed)
    )
    assert found == []


def test_telemetry_knows_only_itself_the_configuration_and_the_errors() -> None:
    """``telemetry/`` (metrics, traces) sits beside the store: the guard, the router and the
    upstream clients call into it, never the other way round."""
    allowed = ("interference.telemetry", "interference.config", "interference.errors")
    found = sorted(
        f"{name} imports {imported}"
        for name, imported_set in MODULES.items()
        if under(name, "interference.telemetry")
        for imported in imported_set
        if under(imported, "interference") and not under(imported, *allowed)
    )
    assert "interference.telemetry.tracing" in MODULES
    assert found == []


LOWER = (
    "interference.hub",
    "interference.store",
    "interference.wire",
    "interference.upstream",
    "interference.engine",
    "interference.providers",
    "interference.routing",
    "interference.config",
    "interference.errors",
)


@pytest.mark.parametrize(
    ("selected", "forbidden"),
    [
        pytest.param(
            lambda name: under(name, *LOWER),
            ("interference.api", "interference.server"),
            id="below-api",
        ),
        pytest.param(
            lambda name: under(name, "interference.engine"),
            ("interference.providers", "interference.routing", "interference.cli"),
            id="engine-below-providers",
        ),
        pytest.param(
            lambda name: not under(name, "interference.api", "interference.server"),
            ("starlette", "uvicorn"),
            id="http-server-stack-only-in-api-and-server",
        ),
    ],
)
def test_lower_layers_never_import_higher_ones(
    selected: Callable[[str], bool], forbidden: tuple[str, ...]
) -> None:
    assert offenders(selected, forbidden) == []


def test_the_checks_catch_an_upward_import(tmp_path: Path) -> None:
    """The import reader sees lazy and relative imports too."""
    module = tmp_path / "src" / "interference" / "providers" / "fake.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..api import routes\n    import starlette.responses\n")
    found = imports_of(module, tmp_path / "src")
    assert "interference.api.routes" in found
    assert "starlette.responses" in found
