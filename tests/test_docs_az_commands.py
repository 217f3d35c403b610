"""Every `az` command line in README.md and docs/ is in a form the Azure CLI accepts: the real CLI (installed by
`make azcli` into its own environment, .venv-azcli/) parses each one with its own command table and argument
parser; nothing is run and nothing is sent. The arguments are those the real shell hands over (test_docs_az_shell:
each line runs with a stub `az` that records them), so a substitution such as `--expiry "$(date ...)"` is parsed
as its value. Lines in code blocks must parse completely (required arguments, choices, --query syntax); commands
named in prose must exist, with only flags they have."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.documented_commands import DOCUMENTS, documented_calls

REPO = Path(__file__).resolve().parent.parent
AZ_PYTHON = REPO / ".venv-azcli" / "bin" / "python"


def parse_with_the_azure_cli(items: list[dict], home: Path) -> list[dict]:
    if not AZ_PYTHON.exists():
        pytest.skip("the Azure CLI for the docs check is not installed: run `make azcli` (pip package azure-cli)")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AZURE_CONFIG_DIR": str(home / ".azure"),
        "AZURE_CORE_COLLECT_TELEMETRY": "no",
    }
    result = subprocess.run(
        [str(AZ_PYTHON), str(REPO / "tests" / "support" / "azcli_parse.py")],
        input=json.dumps(items), capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_checker_rejects_what_the_azure_cli_rejects(tmp_path):
    """The check can fail: a misspelt flag, a missing required argument, an unknown command, an unknown flag in
    prose, a bad --query are all refused; the same lines written correctly pass."""
    items = [
        {"args": ["batch", "pool", "show", "--pool-idd", "p"], "mention": False},
        {"args": ["batch", "pool", "show"], "mention": False},
        {"args": ["batch", "pool", "shows", "--pool-id", "p"], "mention": False},
        {"args": ["batch", "account", "login", "--shared-key"], "mention": True},
        {"args": ["batch", "pool", "show", "--pool-id", "p", "--query", "{a:"], "mention": False},
        {"args": ["batch", "pool", "show", "--pool-id", "p", "--query", "{a:state}"], "mention": False},
        {"args": ["batch", "account", "login", "--shared-key-auth"], "mention": True},
        {"args": ["batch", "account"], "mention": True},
    ]
    results = parse_with_the_azure_cli(items, tmp_path)
    assert [r["ok"] for r in results] == [False, False, False, False, False, True, True, True], results


@pytest.mark.parametrize("document", DOCUMENTS)
def test_az_command_lines_parse_with_the_azure_cli(document, tmp_path):
    commands = documented_calls((REPO / document).read_text(), tmp_path)
    if document == "docs/azure.md":
        # The extraction sees the step-by-step commands (a broken regex must not pass by finding nothing).
        heads = {" ".join(text.split()[:4]) for _, _, text in commands}
        assert {"az login", "az batch account list"} <= heads, heads
        assert sum(not mention for _, mention, _ in commands) >= 6
    if not commands:
        pytest.skip(f"{document} names no az command")
    results = parse_with_the_azure_cli([{"args": a, "mention": m} for a, m, _ in commands], tmp_path)
    problems = [f"{text!r}: {r['error']}" for (_, _, text), r in zip(commands, results) if not r["ok"]]
    assert not problems, f"{document}: az command lines the Azure CLI does not accept:\n" + "\n".join(problems)
