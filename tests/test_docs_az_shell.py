"""Every documented `az` command line goes through the real shell as written. A stub `az`, first on PATH, records
the arguments each invocation receives; they must be exactly the words the line shows (a formula in double
quotes loses `$PendingTasks` to the shell, which a shlex parse of the line cannot notice). Then the documented
Batch data-plane lines that the local service implements run through the real Azure CLI (`make azcli`) against
a local service over HTTPS, the account coming from the CLI's own variables (no key on any command line)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from support.waiting import wait_for
from support.documented_commands import (
    DOCUMENTS,
    REPO,
    SHELL_VARIABLES,
    STUB_OUTPUT,
    expected_calls,
    run_with_stub,
    shell_lines,
)

AZ_PYTHON = REPO / ".venv-azcli" / "bin" / "python"


def shell_problems(line: str, tmp: Path) -> list[str]:
    """What the shell does to `line` that its text does not show (empty: every word arrives as written)."""
    result, calls = run_with_stub(line, tmp)
    if result.returncode != 0:
        return [f"bash exits {result.returncode}: {result.stderr.strip()[-300:]}"]
    expected = expected_calls(line)
    if len(calls) != len(expected):
        return [f"az ran {len(calls)} time(s), the line shows {len(expected)}: {calls}"]
    problems = []
    for want, got in zip(expected, calls):
        if len(want) != len(got):
            problems.append(f"az got {len(got)} argument(s), the line shows {len(want)}: {got}")
            continue
        for word, arrived in zip(want, got):
            for name, value in SHELL_VARIABLES.items():
                word = re.sub(rf"\$(\{{{name}\}}|{name}\b)", value, word)
            # A word holding a command substitution is the shell's to fill in; every other word arrives intact.
            if "$(" in word:
                if not arrived.strip():
                    problems.append(f"{word!r} arrived empty")
            elif word != arrived:
                problems.append(f"{word!r} arrived as {arrived!r}")
    return problems


def test_the_shell_check_catches_what_the_shell_changes(tmp_path):
    """The check can fail: a double-quoted formula (the shell empties its variables), an unclosed quote, a
    variable the docs do not mean the shell to fill in; the same lines quoted correctly pass, a substitution is
    filled in, a comment is no word."""
    formula = "--auto-scale-formula {q}$TargetDedicatedNodes = 1;{q}"
    enable = "az batch pool autoscale enable --pool-id p "
    assert shell_problems(enable + formula.format(q='"'), tmp_path) == [
        "'$TargetDedicatedNodes = 1;' arrived as ' = 1;'"]
    assert shell_problems(enable + formula.format(q="'"), tmp_path) == []
    assert shell_problems("az batch pool show --pool-id 'p", tmp_path)[0].startswith("bash exits")
    assert shell_problems("az batch pool show --pool-id $POOL", tmp_path) == [
        "az got 4 argument(s), the line shows 5: ['batch', 'pool', 'show', '--pool-id']"]
    assert shell_problems("az batch task create --task-id t$i", tmp_path) == []
    assert shell_problems('export K="$(az batch account keys list -g G -n a --query primary -o tsv)"  # note',
                          tmp_path) == []
    line = 'az role assignment create --scope "$(az group show -n G --query id -o tsv)"'
    result, calls = run_with_stub(line, tmp_path)
    assert calls == [["group", "show", "-n", "G", "--query", "id", "-o", "tsv"],
                     ["role", "assignment", "create", "--scope", STUB_OUTPUT]], (result.stderr, calls)


def test_the_docs_show_all_their_az_lines():
    """Splitting the README into pages lost no az line: 87 before the split, all of them on some page now."""
    assert sum(len(shell_lines((REPO / document).read_text())) for document in DOCUMENTS) >= 87


@pytest.mark.parametrize("document", DOCUMENTS)
def test_documented_az_lines_reach_az_as_written(document, tmp_path):
    lines = shell_lines((REPO / document).read_text())
    # The extraction sees the step-by-step commands and the autoscale formulas (finding nothing must not pass).
    if document == "docs/azure.md":
        assert any(line.startswith("az batch account list") for line in lines), lines
    if document == "docs/pools-and-nodes.md":
        assert sum("--auto-scale-formula" in line for line in lines) >= 2, lines
    if not lines:
        pytest.skip(f"{document} shows no az command line")
    problems = {line: found for line in lines if (found := shell_problems(line, tmp_path))}
    assert not problems, f"{document}: az lines the shell does not pass on as written:\n" + "\n".join(
        f"{line}\n    {'; '.join(found)}" for line, found in problems.items())
    # Any `$` in a formula survives the shell: Batch's variables reach az with their names.
    for line in lines:
        if "--auto-scale-formula" in line:
            _, calls = run_with_stub(line, tmp_path)
            formula = calls[-1][calls[-1].index("--auto-scale-formula") + 1]
            assert re.search(r"\$[A-Z][A-Za-z]+", formula), (line, formula)


# -- the real Azure CLI against the local service ----------------------------------------------------------------

# Documented lines (found by their start in README.md or docs/) that the local service implements, in the order they run:
# on the pools `mypool` (1 node), `sm-spot` (none) and `P` (1 node; the troubleshooting table's placeholder ids P,
# J and T are valid ids, so those lines run as written). Not `az batch pool create` / `resize`: azure-cli 2.91
# sends their node counts as JSON strings ("2"), which the service refuses as Batch's spec types them int32.
CLI_LINES = (
    'az batch pool show --pool-id mypool --query "{state:state, allocation:',
    'az batch pool show --pool-id mypool --query "{state:state, nodes:',
    "az batch pool supported-images list",
    "az batch pool autoscale enable --pool-id sm-spot",
    "az batch pool autoscale evaluate --pool-id sm-spot",
    "az batch pool delete --pool-id sm-spot --yes",
    "az batch node list --pool-id P -o table",
    "az batch job prep-release-status list --job-id J",
    "az batch task file list --job-id J --task-id T",
)


def documented_line(start: str) -> str:
    found = [line for document in DOCUMENTS for line in shell_lines((REPO / document).read_text())
             if line.startswith(start)]
    assert found, f"README.md and docs/ no longer show a line starting {start!r}"
    return found[0]


def test_documented_batch_lines_work_with_the_azure_cli_against_the_local_service(make_service, tmp_path):
    if not AZ_PYTHON.exists():
        pytest.skip("the Azure CLI for the docs check is not installed: run `make azcli` (pip package azure-cli)")
    service = make_service(pools=["mypool:1:1", "sm-spot:0:1", "P:1:1"], https=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(f'#!/bin/sh\nexec "{AZ_PYTHON}" -m azure.cli "$@"\n')
    (bin_dir / "az").chmod(0o755)
    # The CLI takes account, endpoint and key from its own variables; its TLS trust from REQUESTS_CA_BUNDLE.
    names = ("AZURE_BATCH_ENDPOINT", "AZURE_BATCH_ACCOUNT", "AZURE_BATCH_ACCESS_KEY", "REQUESTS_CA_BUNDLE")
    env = {name: service.env[name] for name in names}
    assert env["AZURE_BATCH_ENDPOINT"].startswith("https://")
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", HOME=str(tmp_path), AZURE_CONFIG_DIR=str(tmp_path / ".azure"),
               AZURE_CORE_COLLECT_TELEMETRY="no", AZURE_CORE_NO_COLOR="1", LC_ALL="C.UTF-8")
    batch = service.batch_client()

    def az(start: str) -> str:
        line = documented_line(start)
        result = subprocess.run(["bash", "--noprofile", "--norc", "-c", line], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{line}\n{result.stderr[-1500:]}"
        assert service.env["AZURE_BATCH_ACCESS_KEY"] not in result.stdout + result.stderr
        return result.stdout

    shown = json.loads(az(CLI_LINES[0]))
    assert shown["state"] == "active" and shown["nodes"] == 1, shown
    assert json.loads(az(CLI_LINES[1]))["lowPriority"] == 0
    assert "batch.node" in az(CLI_LINES[2])
    az(CLI_LINES[3])
    # The formula reached Batch with its variables: the shell passed the `$` words on, the CLI sent them.
    assert "$PendingTasks.GetSample(1)" in batch.get_pool("sm-spot").auto_scale_formula
    evaluated = json.loads(az(CLI_LINES[4]))
    assert "$TargetDedicatedNodes=1" in evaluated["results"], evaluated
    az(CLI_LINES[5])
    wait_for(lambda: all(p.id != "sm-spot" for p in batch.list_pools()), 30, "sm-spot was never deleted")

    node = next(iter(batch.list_nodes("P")))
    assert node.id in az(CLI_LINES[6])
    batch.create_job({"id": "J", "poolInfo": {"poolId": "P"},
                      "jobPreparationTask": {"commandLine": "/bin/true", "waitForSuccess": True}})
    batch.create_task("J", {"id": "T", "commandLine": "/bin/sh -c 'echo done'"})
    wait_for(lambda: batch.get_task("J", "T").state == "completed", 60, "task T never completed")
    statuses = json.loads(az(CLI_LINES[7]))
    assert [s["nodeId"] for s in statuses] == [node.id], statuses
    files = json.loads(az(CLI_LINES[8]))
    assert {"stdout.txt", "stderr.txt"} <= {f["name"] for f in files}, files
