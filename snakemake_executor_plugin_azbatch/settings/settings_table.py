"""The settings table of docs/settings.md, rendered from `ExecutorSettings` so that each default is stated once, in
the code. `python -m snakemake_executor_plugin_azbatch.settings.settings_table [PAGE]` rewrites the table in PAGE (default
docs/settings.md) between its two marker lines; tests/test_docs_pages.py checks that the page is up to date."""

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .executor_settings import CLI_FALLBACKS, ENV_PREFIX, ExecutorSettings

BEGIN = "<!-- settings table: generated from ExecutorSettings by `python -m snakemake_executor_plugin_azbatch.settings.settings_table` -->"
END = "<!-- end of the generated settings table -->"
REGENERATE = ".venv/bin/python -m snakemake_executor_plugin_azbatch.settings.settings_table docs/settings.md"


def _code(text: str) -> str:
    return f"`{text}`"


def _default(f) -> str:
    if f.metadata.get("required"):
        return "required"
    if "unset" in f.metadata:  # what an unset setting means, as `--help` says it
        return f.metadata["unset"]
    value = f.default_factory() if f.default is MISSING else f.default
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return _code(str(value).lower())
    return _code(str(value))


def _meaning(f) -> str:
    # The help without the "Default: ..." / "Required." tail that executor_settings.py appends (the default has its column).
    text = f.metadata["help"].rsplit(" Required.", 1)[0] if f.metadata.get("required") else (
        f.metadata["help"].rsplit(" Default: ", 1)[0])
    return text.replace("|", "\\|")


def render() -> str:
    """The table as markdown lines, between the markers."""
    rows = [BEGIN, "| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in fields(ExecutorSettings):
        variables = [ENV_PREFIX + f.name.upper()] if f.metadata.get("env_var") else []
        if f.name in CLI_FALLBACKS:
            variables.append(CLI_FALLBACKS[f.name])
        flag = "--azbatch-" + f.name.replace("_", "-")
        rows.append(f"| {_code(flag)} | {', then '.join(map(_code, variables))} | {_default(f)} | {_meaning(f)} |")
    return "\n".join(rows + [END]) + "\n"


def rewrite(page: str) -> str:
    """`page` with its generated table replaced by the current one."""
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END + "\n", 1)
    return head + render() + tail


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/settings.md")
    path.write_text(rewrite(path.read_text()))
