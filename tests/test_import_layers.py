"""The package has no import cycle (lazy and TYPE_CHECKING imports included), and the local service's layers
import only downward: HTTP → API → model → execution seam → node layout. Parsed with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snakemake_executor_plugin_azbatch"
NAME = PACKAGE.name

pytestmark = pytest.mark.quick


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → package modules it imports anywhere in its body (functions and `if TYPE_CHECKING:` too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
                targets.update(submodules or {base})  # `from . import x` imports the module x
        # A parent package is always initialised before its modules: importing it is not an edge back.
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert f"{NAME}.local.model" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("model", {"http_server", "api", "routes", "http_messages", "host_backend", "stock_backend", "node_agent",
                   "containers", "isolation", "service"}),
        ("lifecycle", {"http_server", "api", "host_backend", "stock_backend", "node_agent", "containers", "model",
                       "service"}),
        ("scheduler", {"http_server", "api", "host_backend", "stock_backend", "node_agent", "model", "service"}),
        ("node_agent", {"model", "lifecycle", "scheduler", "records", "api", "http_server"}),
        ("host_backend", {"model", "lifecycle", "scheduler", "records", "api", "http_server"}),
        ("simulated_backend", {"model", "lifecycle", "scheduler", "records", "api", "http_server", "node_agent",
                               "host_backend", "stock_backend", "containers", "isolation"}),
        ("stock_backend", {"model", "lifecycle", "scheduler", "records", "api", "http_server", "host_backend"}),
        ("isolation", {"model", "lifecycle", "node_agent", "service", "api"}),
        ("containers", {"model", "lifecycle", "node_agent", "isolation", "service", "api"}),
        ("api", {"http_server", "host_backend", "node_agent", "lifecycle", "records"}),
        ("errors", {"http_messages", "http_server", "api"}),
    ],
)
def test_layers_import_only_downward(module: str, forbidden: set[str]) -> None:
    graph = import_graph()
    imported = {name.rsplit(".", 1)[-1] for name in graph[f"{NAME}.local.{module}"]}
    assert not imported & forbidden, f"local/{module}.py imports {sorted(imported & forbidden)}"
