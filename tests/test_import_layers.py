"""The package has no import cycle (lazy and TYPE_CHECKING imports included); the local service's folders import only
what their allow-list names (HTTP → API → model → backends → nodes; storage, auth beside); the plugin wing never
imports the local service. Parsed with `ast`, nothing is imported."""

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
    assert f"{NAME}.local.model.batch_state" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


LOCAL = f"{NAME}.local"
# The local wing's folders, each with the folders (and top-level modules) it may import: HTTP → API → model →
# backends → nodes; storage and auth beside them. Top-level `cli` and `service` assemble everything; `service_config`
# is read by every layer (and checks the node prerequisites lazily).
LOCAL_ALLOWED: dict[str, set[str]] = {
    "http": {"api", "model", "auth", "service_config"},
    "api": {"model"},
    "model": {"backends", "nodes", "service_config"},
    "backends": {"nodes", "service_config"},
    "nodes": {"service_config"},
    "storage": {"auth", "service_config"},
    "auth": {"service_config"},
    "service_config": {"nodes", "auth"},
    "pool_file": {"service_config"},
    "cli_options": {"http", "auth", "nodes", "service_config", "pool_file"},
    "cli": {"http", "api", "model", "backends", "nodes", "storage", "auth", "service_config", "pool_file", "service",
            "cli_options"},
    "service": {"http", "api", "model", "backends", "nodes", "storage", "auth", "service_config"},
}
# What both wings share (facts about the nodes' software): it imports neither wing, and neither wing imports the
# other. The local parts that may use it:
SHARED = f"{NAME}.node_software"
LOCAL_USES_SHARED = {"model", "nodes"}


def _shared(module: str) -> bool:
    return module == SHARED or module.startswith(SHARED + ".")


def test_the_shared_package_imports_neither_wing() -> None:
    wrong = [f"{m} → {t}" for m, ts in import_graph().items() if _shared(m) for t in ts if not _shared(t)]
    assert not wrong, "node_software imports a wing: " + "; ".join(sorted(wrong))


def _local_part(module: str) -> str:
    """`…local.model.lifecycle` → "model"; a top-level module → its own name."""
    return module[len(LOCAL) + 1:].split(".")[0]


def test_every_local_folder_and_top_level_module_has_an_allow_list() -> None:
    parts = {_local_part(m) for m in import_graph() if m.startswith(LOCAL + ".")}
    assert parts == set(LOCAL_ALLOWED)


@pytest.mark.parametrize("part", sorted(LOCAL_ALLOWED))
def test_local_folders_import_only_what_they_may(part: str) -> None:
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        if not module.startswith(LOCAL + ".") or _local_part(module) != part:
            continue
        for target in targets:
            if target.startswith(LOCAL + "."):
                if _local_part(target) not in LOCAL_ALLOWED[part] | {part}:
                    wrong.append(f"{module} → {target}")
            elif target != LOCAL and not (part in LOCAL_USES_SHARED and _shared(target)):
                wrong.append(f"{module} → {target}")  # the plugin wing
    assert not wrong, "imports across the local layers: " + "; ".join(sorted(wrong))


def test_the_plugin_wing_never_imports_the_local_service() -> None:
    wrong = [f"{m} → {t}" for m, ts in import_graph().items() if not m.startswith(LOCAL) for t in ts
             if t.startswith(LOCAL)]
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # Inside the model: the state machine and the scheduler never reach up to the account's operations.
        ("model.lifecycle", {"model.batch_state", "model.pool_management", "model.pool_operations"}),
        ("model.node_task_runs", {"model.batch_state", "model.lifecycle", "model.scheduler"}),
        ("model.pool_records", {"model.batch_records", "model.batch_state", "model.lifecycle"}),
        ("model.autoscale_parser", {"model.autoscale"}),
        ("model.scheduler", {"model.batch_state"}),
        ("model.batch_records", {"model.batch_state", "model.lifecycle", "model.scheduler"}),
        ("model.errors", {"model.batch_state", "model.validation", "model.timestamps"}),
        # Inside the backends: a simulated node runs no process; a stock node is not the host.
        ("backends.simulated_backend", {"backends.node_agent", "backends.host_backend", "backends.stock_backend",
                                        "nodes.containers", "nodes.isolation"}),
        ("backends.stock_backend", {"backends.host_backend"}),
        ("backends.blob_transfer", {"backends.blob_uploads", "backends.node_agent"}),
        ("backends.host_backend", {"backends.stock_backend", "nodes.isolation"}),
    ],
)
def test_modules_inside_a_layer_import_only_downward(module: str, forbidden: set[str]) -> None:
    imported = {name[len(LOCAL) + 1:] for name in import_graph()[f"{LOCAL}.{module}"]}
    assert not imported & forbidden, f"local/{module} imports {sorted(imported & forbidden)}"


def test_local_module_names_are_unique_in_the_package_and_its_top_level_is_small() -> None:
    local_names = [p.name for p in (PACKAGE / "local").rglob("*.py") if p.name != "__init__.py"]
    plugin_names = {p.name for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "local"}
    assert len(local_names) == len(set(local_names)), sorted({n for n in local_names if local_names.count(n) > 1})
    assert not set(local_names) & plugin_names, sorted(set(local_names) & plugin_names)
    top = sorted(p.name for p in (PACKAGE / "local").glob("*.py"))
    assert len(top) <= 10, top


def test_the_design_doc_names_every_local_package_and_module() -> None:
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    local = PACKAGE / "local"
    packages = [f"`local/{p.parent.relative_to(local)}/`" for p in local.glob("*/__init__.py")]
    modules = [f"`{p.relative_to(local)}`" for p in local.rglob("*.py") if p.name != "__init__.py"]
    assert [name for name in packages + modules if name not in design] == []


def test_local_modules_and_functions_stay_small() -> None:
    """No module of the local wing over 400 lines, no function over 60: a bigger one is split by concern."""
    too_big = []
    for path in sorted((PACKAGE / "local").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_big.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_big.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: "
                               f"{node.end_lineno - node.lineno + 1} lines")
    assert too_big == []


# The plugin wing's folders (and top-level modules), each with the folders it may import; "" is the package itself
# (what Snakemake loads). Settings and the pool/VM tables know nothing of ours; config checks settings; the Azure
# clients and staging take a checked config; a task is built from config, pools and the staging layout; a run uses
# everything below it; the report reads what the run's progress counted; the executor ties them together.
PLUGIN_ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "pools": set(),
    "bootstrap": set(),
    "node_software": set(),  # shared with the local wing (SHARED)
    "config": {"settings", "pools"},
    "azure_api": {"settings", "config", "pools"},
    "staging": {"settings", "config", "azure_api"},
    "tasks": {"settings", "config", "pools", "staging"},
    "run": {"settings", "config", "pools", "bootstrap", "node_software", "azure_api", "staging", "tasks"},
    "report": {"config", "azure_api", "staging", "run"},
    "adoption": {"azure_api", "staging", "run"},
    "executor": {"settings", "config", "pools", "bootstrap", "azure_api", "staging", "tasks", "run", "report",
                 "adoption"},
    "": {"executor", "settings"},
}


def _plugin_part(module: str) -> str:
    """`…run.progress` → "run"; the package itself → ""."""
    return module[len(NAME) + 1:].split(".")[0]


def test_every_plugin_folder_and_top_level_module_has_an_allow_list() -> None:
    parts = {_plugin_part(m) for m in import_graph() if not m.startswith(LOCAL)}
    assert parts == set(PLUGIN_ALLOWED)


@pytest.mark.parametrize("part", sorted(PLUGIN_ALLOWED))
def test_plugin_folders_import_only_what_they_may(part: str) -> None:
    wrong = [f"{module} → {target}" for module, targets in import_graph().items()
             if not module.startswith(LOCAL) and _plugin_part(module) == part
             for target in targets if _plugin_part(target) not in PLUGIN_ALLOWED[part] | {part}]
    assert not wrong, "imports across the plugin's layers: " + "; ".join(sorted(wrong))


def test_the_design_doc_names_every_plugin_package_and_module() -> None:
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    plugin = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "local"]
    packages = [f"`{p.parent.relative_to(PACKAGE)}/`" for p in plugin if p.name == "__init__.py" and p.parent != PACKAGE]
    modules = [f"`{p.relative_to(PACKAGE)}`" for p in plugin if p.name != "__init__.py"]
    assert [name for name in packages + modules if name not in design] == []
