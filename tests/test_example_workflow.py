"""example_workflow/ through `snakemake --executor azbatch` on the local Batch service, via run_demo.py as
`make demo` runs it; checks the pipeline's final outputs' content and what the demo reports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.workflow_copies import EXAMPLE, copy_example, read_tsv

SAMPLES = ["A", "B", "C"]
# Batch tasks of the example: 5 per-sample rules x 3 samples, summarize and 10 random_md5 tasks (their gather is a
# local rule).
EXPECTED_TASKS = 5 * len(SAMPLES) + 1 + 10
# The prices `make demo` passes (Makefile DEMO_PRICES), so the report has the cost estimate the README shows.
DEMO_PRICES = re.search(r"^DEMO_PRICES := (.*)$", (EXAMPLE.parent / "Makefile").read_text(), re.M).group(1).split()


def run_demo(workdir: Path, service, *args: str) -> subprocess.CompletedProcess:
    """Run run_demo.py as `make demo` does; its whole console output is kept in demo-output.txt next to workdir."""
    env = {**os.environ, **service.env}
    # Nodes run `python3`/`snakemake` from PATH: the test's own virtualenv first, as `make demo` arranges.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Own process group, so a hung run is stopped with its snakemake child, not just run_demo.py.
    process = subprocess.Popen(
        [sys.executable, "run_demo.py", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=540)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    (workdir.parent / "demo-output.txt").write_text(result.stdout + "\n----- stderr -----\n" + result.stderr)
    return result


def task_table(stdout: str) -> list[list[str]]:
    """Rows of run_demo.py's 'What ran where' table: task id, node, state, exit code, Snakemake job."""
    lines = stdout.split("What ran where", 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("  ") or line.strip().startswith("Task output"):
            break
        rows.append(line.split(maxsplit=4))
    return rows


@pytest.fixture
def service(make_service):
    return make_service()


def test_example_workflow_runs_through_the_executor(service, tmp_path):
    workdir = copy_example(tmp_path)
    result = run_demo(workdir, service, "--jobs", "12", *DEMO_PRICES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"run_demo.py failed; whole output in {tmp_path / 'demo-output.txt'}\n{output[-3000:]}"

    # The variant calls are exactly the SNPs planted in the reads (data/truth_variants.tsv).
    called = {(r["sample"], r["contig"], r["position"], r["ref"], r["alt"]) for r in read_tsv(workdir / "results/summary/variants.tsv")}
    truth = {(r["sample"], r["contig"], r["position"], r["ref"], r["alt"]) for r in read_tsv(workdir / "data/truth_variants.tsv")}
    assert called == truth

    summary = {row["sample"]: row for row in read_tsv(workdir / "results/summary/samples.tsv")}
    assert sorted(summary) == SAMPLES
    for sample, row in summary.items():
        assert int(row["raw_reads"]) == 360
        assert int(row["mapped_reads"]) >= 0.95 * int(row["trimmed_reads"]) > 0
        assert 5 < float(row["mean_depth"]) < 12
        assert int(row["snvs"]) == sum(1 for t in truth if t[0] == sample)

    plot = (workdir / "results/summary/coverage.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n") and len(plot) > 10_000

    # directory() output: one depth file per contig, one line per reference base.
    for sample in SAMPLES:
        depth_files = sorted(p.name for p in (workdir / f"results/coverage/{sample}").iterdir())
        assert depth_files == ["chr1.depth.tsv", "chr2.depth.tsv"]
        assert len(read_tsv(workdir / f"results/coverage/{sample}/chr2.depth.tsv")) == 1000
        # Logs and benchmark files come back from the nodes too.
        assert "2 worker processes" in (workdir / f"logs/align/{sample}.log").read_text()
        assert (workdir / f"benchmarks/align/{sample}.tsv").read_text().startswith("s\th:m:s")
        assert (workdir / f"logs/qc/{sample}.log").read_text().startswith("qc ")

    # The az batch tutorial: ten tasks, ten different hashes, each computed on a node of the pool.
    node_ids = {node.id for node in service.batch_client().list_nodes(service.pool_id)}
    lines = (workdir / "results/random_md5/all.txt").read_text().splitlines()
    assert len(lines) == 10
    parsed = [re.fullmatch(r"task (\d+) node (\S+) md5 ([0-9a-f]{32})", line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == list(range(1, 11))
    assert {m.group(2) for m in parsed} <= node_ids
    assert len({m.group(3) for m in parsed}) == 10

    # What the demo prints: where results and logs are, and every task with its node, state and exit code.
    for name in ("results/summary/samples.tsv", "results/summary/coverage.png", "results/random_md5/all.txt"):
        assert f"{workdir / name}" in result.stdout
    assert f"{workdir / 'logs'}" in result.stdout
    # The run report: its path as the plugin prints it and as the demo lists it; one row per Batch task.
    report = re.search(r"run report: +(\S+report\.html)", result.stdout)
    assert report and f"azbatch: run report: {report.group(1)}" in result.stderr, result.stdout[-2000:]
    assert len(read_tsv(Path(report.group(1)).parent / "tasks.tsv")) == EXPECTED_TASKS
    cost = Path(report.group(1)).read_text().split('id="cost"', 1)[1].split("</div>", 1)[0]
    assert 'id="cost-table"' in cost and "No price given" not in cost  # make demo's prices reach the report
    rows = task_table(result.stdout)
    assert len(rows) == EXPECTED_TASKS, result.stdout
    assert all(row[1] in node_ids and row[2] == "completed" and row[3] == "0" for row in rows), result.stdout
    rules = {row[4].split()[0] for row in rows}
    assert rules == {"qc", "trim", "align", "coverage", "call_variants", "summarize", "random_md5"}

    # Secrets never reach the console.
    for secret in (service.config.account_key, service.endpoints.storage.account_key):
        assert secret not in output
    assert "sig=" not in output  # no SAS URL either


def test_demo_exits_non_zero_and_shows_the_failed_task_when_a_job_fails(service, tmp_path):
    workdir = copy_example(tmp_path)
    (workdir / "scripts/trim_reads.py").write_text("import sys\nsys.exit('trim_reads: simulated failure')\n")
    result = run_demo(workdir, service, "results/trimmed/A.fastq")
    assert result.returncode != 0, result.stdout[-4000:]
    rows = task_table(result.stdout)
    assert len(rows) == 1 and rows[0][4].startswith("trim") and rows[0][2] == "completed" and rows[0][3] not in ("0", "-")
    assert "snakemake failed" in result.stderr
    # The job's log file is brought back from the node even though the task failed.
    assert "simulated failure" in (workdir / "logs/trim/A.log").read_text()


def test_demo_without_settings_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE_AZBATCH_", "AZURE_BATCH_", "AZURE_STORAGE_"))}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "run_demo.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SNAKEMAKE_AZBATCH_ACCOUNT_URL" in lines[0] and "make demo" in lines[0]
    assert not (tmp_path / ".snakemake").exists()  # nothing ran


def test_readme_per_rule_pool_recipe_sends_a_rule_to_a_second_pool(make_service, tmp_path):
    """README's `--set-resources "RULE:azbatch_pool='POOL'"` recipe: align runs in its own Batch job on `big`."""
    service = make_service(pools=["local:1:1", "big:1:2"])
    workdir = copy_example(tmp_path)
    result = run_demo(workdir, service, "--set-resources", "align:azbatch_pool='big'", "--", "results/aligned/A.tsv")
    assert result.returncode == 0, f"whole output in {tmp_path / 'demo-output.txt'}\n{result.stdout[-3000:]}"
    client = service.batch_client()
    nodes = {pool: {n.id for n in client.list_nodes(pool)} for pool in ("local", "big")}
    tables = dict(re.findall(r"What ran where: Batch job (\S+), \d+ tasks\n(.*?)\n  Task output", result.stdout, re.S))
    assert sorted(job_id.rsplit("-", 1)[1] for job_id in tables) == ["big", "local"]
    for job_id, table in tables.items():
        pool = job_id.rsplit("-", 1)[1]
        (row,) = [line.split(maxsplit=4) for line in table.splitlines()[1:]]
        assert row[4].split()[0] == ("align" if pool == "big" else "trim")
        assert row[1] in nodes[pool] and row[2] == "completed" and row[3] == "0"
    assert len(read_tsv(workdir / "results/aligned/A.tsv")) == 360
