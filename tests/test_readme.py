"""The README, the docs/ pages and the plugin-catalog pages stay true to the code: settings table, commands, flags,
profile. Each check reads the page where its text lives (the README links to them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

from snakemake_executor_plugin_azbatch.settings import executor_settings as settings_module

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = {str(path.relative_to(REPO)): path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
AZURE = DOCS["docs/azure.md"]
SETTINGS = DOCS["docs/settings.md"]
LOCAL_SERVICE = DOCS["docs/local-service.md"]
NO_DEFAULT = "—"


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading` up to the next heading of the same or a higher level."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^#{{1,2}} |\Z)", markdown, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def markdown_table(text: str) -> list[dict[str, str]]:
    """The first pipe table in `text` as a list of {header: cell} dicts (cells stripped)."""
    lines = [line.strip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, separator, *body = rows
    assert all(set(cell) <= set("-: ") for cell in separator), "second table line must be the separator"
    assert all(len(row) == len(header) for row in body), "every table row needs one cell per column"
    return [dict(zip(header, row)) for row in body]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def plugin_settings() -> dict[str, dict]:
    """Settings as Snakemake itself sees them (flag, env var, default, required) through the plugin registry."""
    plugin = ExecutorPluginRegistry().get_plugin("azbatch")
    return {info["cliarg"]: info for info in plugin.get_settings_info()}


def documented_default(info: dict) -> str:
    if info["required"]:
        return "required"
    default = info["default"]
    if default is None or default == "" or default == "<function>":  # default_factory fields are empty lists
        return NO_DEFAULT
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_settings_table_matches_the_plugin_settings():
    rows = markdown_table(SETTINGS)
    assert [set(row) for row in rows][0] == {"flag", "environment variable", "default", "meaning"}
    documented = {code_spans(row["flag"])[0]: row for row in rows}
    actual = plugin_settings()
    assert len(documented) == len(rows), "a flag appears twice in the settings table"
    assert sorted(documented) == sorted(actual), "docs/settings.md and ExecutorSettings list different flags"
    for flag, info in actual.items():
        row = documented[flag]
        name = info["name"]
        expected_env = [info["env_var"]] if info["env_var"] else []
        if name in settings_module.CLI_FALLBACKS:
            expected_env.append(settings_module.CLI_FALLBACKS[name])
        assert code_spans(row["environment variable"]) == expected_env, f"{flag}: environment variable column"
        cell = row["default"]
        expected = documented_default(info)
        if expected == NO_DEFAULT and "unset" in settings_module.ExecutorSettings.__dataclass_fields__[info["name"]].metadata:
            expected = settings_module.ExecutorSettings.__dataclass_fields__[info["name"]].metadata["unset"]
        assert cell == expected, f"{flag}: docs/settings.md default {cell!r}, code default {expected!r}"
        assert len(row["meaning"]) > 15, f"{flag}: the meaning column needs a real explanation"


def test_quick_start_is_exactly_make_demo_and_make_test():
    commands = [line.strip() for line in section(README, "Quick start").splitlines() if line.startswith("    ")]
    assert commands == ["make demo", "make test"]


def test_readme_make_commands_are_makefile_targets_and_ci_uses_make_test():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    for document, text in DOCS.items():
        for target in re.findall(r"`make (\w[\w-]*)`|^\s+make (\w[\w-]*)\s*$", text, re.M):
            name = next(t for t in target if t)
            assert name in targets, f"{document} mentions `make {name}` but the Makefile has no such target"
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must run the README's `make test`"
    # The demo target is what the README promises: the local service running run_demo.py.
    demo_recipe = re.search(r"^demo:.*?\n((?:\t.*\n?)+)", makefile, re.M).group(1)
    assert "azbatch-local run" in demo_recipe and "run_demo.py" in demo_recipe
    # ... with the prices the README says its report screenshot was made with.
    assert "run_demo.py $(DEMO_PRICES)" in demo_recipe
    prices = re.search(r"^DEMO_PRICES := (.*)$", makefile, re.M).group(1)
    report_page = " ".join(DOCS["docs/run-report.md"].split())
    claimed = re.search(r"The report of `make demo`, which passes example prices \(`([^`]*)` and `([^`]*)`", report_page)
    assert claimed and " ".join(claimed.groups()) == prices, "docs/run-report.md's demo caption and DEMO_PRICES differ"


@pytest.mark.parametrize("document", sorted(DOCS))
def test_every_flag_and_variable_mentioned_exists(document):
    actual = plugin_settings()
    flags = set(actual)
    variables = {info["env_var"] for info in actual.values()} | set(settings_module.CLI_FALLBACKS.values())
    text = DOCS[document]
    for flag in set(re.findall(r"--azbatch-[a-z0-9-]+", text)):
        if flag.endswith("-"):  # a family, as in `--azbatch-pool-*` or `--azbatch-pool-X`
            assert any(f.startswith(flag) for f in flags), f"{document} mentions {flag}*, which the plugin lacks"
            continue
        assert flag in flags, f"{document} mentions {flag}, which the plugin does not define"
    for variable in set(re.findall(r"SNAKEMAKE_AZBATCH_[A-Z0-9_]+", text)):
        assert variable in variables, f"{document} mentions {variable}, which the plugin does not read"


@pytest.fixture
def clean_environment(monkeypatch):
    """Snakemake reads SNAKEMAKE_AZBATCH_* variables as defaults; the parse tests must see only the README's text."""
    import os

    for name in list(os.environ):
        if name.startswith(("SNAKEMAKE_AZBATCH_", "AZURE_BATCH_", "AZURE_STORAGE_")):
            monkeypatch.delenv(name)


def test_readme_profile_loads_with_snakemake(tmp_path, clean_environment):
    """The README's profile uses only real settings and Snakemake accepts it as `--profile`."""
    from snakemake.cli import parse_args

    block = re.search(r"```yaml\n(.*?)```", section(AZURE, "Using it on real Azure, step by step"), re.S)
    profile = yaml.safe_load(block.group(1))
    keys = {"--" + key for key in profile if key.startswith("azbatch-")}
    assert keys and keys <= set(plugin_settings()), f"profile keys not defined by the plugin: {keys - set(plugin_settings())}"
    (tmp_path / "azure").mkdir()
    (tmp_path / "azure" / "profile.yaml").write_text(block.group(1))
    _, args = parse_args(["--profile", str(tmp_path / "azure")])
    assert args.executor == "azbatch"
    assert args.azbatch_pool_id == profile["azbatch-pool-id"]
    assert args.azbatch_storage_container == profile["azbatch-storage-container"]


def test_readme_run_command_parses_with_snakemake(clean_environment):
    """The documented `snakemake --executor azbatch ...` line is accepted by Snakemake's own argument parser."""
    from snakemake.cli import get_argument_parser

    block = section(AZURE, "Using it on real Azure, step by step")
    match = re.search(r"^\s+(snakemake --executor azbatch .*?)(?:\n\s*\n)", block, re.M | re.S)
    assert match, "docs/azure.md's step-by-step section needs a `snakemake --executor azbatch ...` command"
    argv = shlex.split(match.group(1).replace("\\\n", " "))[1:]
    args = get_argument_parser().parse_args(argv)
    assert args.executor == "azbatch"
    assert args.azbatch_pool_id == "mypool"


def test_azbatch_local_options_table_matches_the_cli():
    from snakemake_executor_plugin_azbatch.local import cli

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "serve" in a.choices)
    serve = subparsers.choices["serve"]
    defined = {opt for action in serve._actions for opt in action.option_strings if opt.startswith("--")}
    defined.discard("--help")
    rows = markdown_table(section(LOCAL_SERVICE, "The local Batch service: `azbatch-local`"))
    documented = {span.split()[0] for row in rows for span in code_spans(row["option"])}
    assert documented == defined
