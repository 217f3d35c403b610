"""Size and naming limits for both wings, read from the source (nothing imported): no module over 400 lines, no
function over 60, at most ten modules at the top level of each wing, and no two modules or packages of the whole
package sharing a name (a name says which one it is)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snakemake_executor_plugin_azbatch"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

pytestmark = pytest.mark.quick


def wing_files(wing: str) -> list[Path]:
    """The plugin wing is the package minus `local/`; the local wing is `local/`."""
    if wing == "local":
        return sorted((PACKAGE / "local").rglob("*.py"))
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "local")


def too_big(paths: list[Path], base: Path = PACKAGE) -> list[str]:
    found = []
    for path in paths:
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(base)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(base)}:{node.lineno} {node.name}: {length} lines")
    return found


@pytest.mark.parametrize("wing", ["plugin", "local"])
def test_no_module_over_400_lines_and_no_function_over_60(wing: str) -> None:
    assert too_big(wing_files(wing)) == []


def test_the_size_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    module = tmp_path / "long.py"
    module.write_text(f"def long():\n{body}\n")
    assert too_big([module], tmp_path) == [f"long.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]


@pytest.mark.parametrize("top", [PACKAGE, PACKAGE / "local"], ids=["plugin", "local"])
def test_the_top_level_of_each_wing_holds_at_most_ten_modules(top: Path) -> None:
    modules = sorted(p.name for p in top.glob("*.py"))
    assert len(modules) <= 10, modules


def shared_names(root: Path) -> list[str]:
    """Module file names (without .py) and package folder names that occur more than once under root."""
    names = [p.stem for p in root.rglob("*.py") if p.name != "__init__.py"]
    names += [p.parent.name for p in root.rglob("__init__.py") if p.parent != root]
    return sorted({n for n in names if names.count(n) > 1})


def test_no_two_modules_or_packages_share_a_name() -> None:
    assert shared_names(PACKAGE) == []


def test_the_name_check_sees_a_module_named_like_a_package(tmp_path: Path) -> None:
    for path in ["pkg/__init__.py", "pkg/records.py", "other/__init__.py", "other/pkg.py", "records/__init__.py"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    assert shared_names(tmp_path) == ["pkg", "records"]
