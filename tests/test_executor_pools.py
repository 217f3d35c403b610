"""Pools and preflight on a local service with several pools: per-rule pools (one Batch job per pool used),
application packages, and one clear line with nothing created for bad settings, unknown or empty pools."""

from __future__ import annotations

import re
import zipfile

import pytest
from support.executor_runs import delta, output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.local.service_config import AppPackageSpec


@pytest.fixture
def pools_service(make_service, tmp_path):
    package = tmp_path / "tools-1.0.zip"
    # bin/greet has no exec bit in the zip (mode 0644): the plugin's task prefix makes it executable, so the tasks
    # work whether Batch's nodes keep a package's mode bits or not.
    greet = zipfile.ZipInfo("bin/greet")
    greet.create_system, greet.external_attr = 3, 0o100644 << 16
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("share/greeting.txt", "hello from the tools package\n")
        archive.writestr(greet, "#!/bin/sh\necho greet ran\n")
    return make_service(
        pools=["local:1:2", "big:1:2", "empty:0:1"],
        app_packages=[AppPackageSpec("tools", "1.0", package)],
    )


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error: azbatch:")]


def test_rules_pick_pools_and_tasks_get_application_packages(pools_service, tmp_path):
    workdir = write_files(
        tmp_path / "perpool",
        {
            "Snakefile": """
                rule all:
                    input: "small.txt", "big.txt"

                rule small:
                    output: "small.txt"
                    shell: "cat $AZ_BATCH_APP_PACKAGE_tools_1_0/share/greeting.txt > {output}; echo $PATH >> {output}; greet >> {output}"

                rule large:
                    output: "big.txt"
                    resources: azbatch_pool="big"
                    shell: "echo $AZ_BATCH_POOL_ID > {output}"
            """
        },
    )
    client = pools_service.batch_client()
    result = run_snakemake(
        pools_service,
        workdir,
        container="pools",
        SNAKEMAKE_AZBATCH_APPLICATION_PACKAGES="tools:1.0",
        SNAKEMAKE_AZBATCH_KEEP_JOB="true",
    )
    jobs = list(client.list_jobs())
    try:
        assert result.returncode == 0, output_of(result)
        greeting, path, greeted = (workdir / "small.txt").read_text().splitlines()
        assert greeted == "greet ran"  # a package's bin/ file without its exec bit still runs
        assert greeting == "hello from the tools package"
        assert path.split(":")[0].endswith("/bin") and "tools" in path.split(":")[0]  # package bin/ first on PATH
        assert (workdir / "big.txt").read_text().strip() == "big"
        by_pool = {j.pool_info.pool_id: j for j in jobs}
        assert sorted(by_pool) == ["big", "local"]  # one Batch job per pool used
        big_tasks = [t.id for t in client.list_tasks(by_pool["big"].id)]
        local_tasks = [t for t in client.list_tasks(by_pool["local"].id)]
        assert len(big_tasks) == 1 and big_tasks[0].startswith("large-")
        assert [t.id.split("-")[0] for t in local_tasks] == ["small"]
        assert [r.application_id for r in local_tasks[0].application_package_references] == ["tools"]
        # With application packages, they provide Snakemake: the job preparation task only unpacks the sources.
        preps = [client.get_job(j.id).job_preparation_task for j in jobs]
        assert preps and all(p is not None and "pip install" not in p.command_line for p in preps)
        assert all(enum_text(j.state) == "completed" for j in client.list_jobs())
    finally:
        for job in jobs:
            client.begin_delete_job(job.id, polling_interval=1).result()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"SNAKEMAKE_AZBATCH_POOL_ID": "nope"}, "pool 'nope' does not exist"),
        ({"SNAKEMAKE_AZBATCH_POOL_ID": "empty"}, "pool 'empty' has no nodes and cannot grow"),
        ({"SNAKEMAKE_AZBATCH_ACCOUNT_KEY": "d3Jvbmcta2V5", "AZURE_BATCH_ACCESS_KEY": "d3Jvbmcta2V5"},
         "rejected the credentials"),
        ({"SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": "Bad_Name"}, "--azbatch-storage-container"),
        ({"WRONG_STORAGE_KEY": "d3Jvbmcta2V5"}, "denied (403); check --azbatch-storage-account-key"),
        ({"SNAKEMAKE_AZBATCH_CONTAINER_IMAGE": "python:3.11-slim"},
         "rule a runs in container image 'python:3.11-slim' but pool 'local' has no container support"),
        ({"SNAKEMAKE_AZBATCH_SAS_HOURS": "200", "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": "",
          "AZURE_STORAGE_CONNECTION_STRING": "", "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY": ""},
         "--azbatch-sas-hours (or SNAKEMAKE_AZBATCH_SAS_HOURS) 200 is longer than a user-delegation SAS may live"),
    ],
    ids=["unknown-pool", "empty-pool", "wrong-key", "bad-container", "wrong-storage-key", "image-on-plain-pool",
         "sas-longer-than-user-delegation"],
)
def test_preflight_problems_end_with_one_line_and_nothing_created(pools_service, tmp_path, env, expected):
    workdir = write_files(tmp_path / "preflight", {"Snakefile": 'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'})
    before = pools_service.metrics()
    env = dict(env)
    container = env.pop("SNAKEMAKE_AZBATCH_STORAGE_CONTAINER", "preflight")
    wrong_storage_key = env.pop("WRONG_STORAGE_KEY", None)
    if wrong_storage_key:
        good = pools_service.env["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"]
        env["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"] = re.sub(
            r"AccountKey=[^;]+", f"AccountKey={wrong_storage_key}", good
        )
    result = run_snakemake(pools_service, workdir, container=container, **env)
    after = pools_service.metrics()
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1 and expected in lines[0], output_of(result)
    assert "Traceback" not in result.stdout + result.stderr
    assert delta(before, after, "operations", "Jobs_CreateJob") == 0
    assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 0
    assert list(pools_service.batch_client().list_jobs()) == []
    assert "d3Jvbmcta2V5" not in result.stdout + result.stderr


def test_a_variable_that_overrides_a_profile_key_is_named_in_one_warning(pools_service, tmp_path):
    """ConfigArgParse lets SNAKEMAKE_AZBATCH_POOL_ID (exported here, as by `azbatch-local serve`) beat the profile's
    `azbatch-pool-id`; the run says so once, and profile keys no variable touches stay silent."""
    workdir = write_files(
        tmp_path / "overrides",
        {
            "Snakefile": 'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n',
            "profiles/azure/profile.yaml": "executor: azbatch\nazbatch-pool-id: big\nazbatch-storage-prefix: fromprofile\n",
        },
    )
    result = run_snakemake(pools_service, workdir, "--profile", "profiles/azure", container="overrides")
    assert result.returncode == 0, output_of(result)
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if line.startswith("azbatch: environment variable")]
    assert warnings == [
        "azbatch: environment variable SNAKEMAKE_AZBATCH_POOL_ID overrides 'azbatch-pool-id' from the profile "
        "profiles/azure/profile.yaml (a variable beats a profile key); unset it to use the profile's value"
    ], output_of(result)
    assert re.search(r"Batch job \S+ on pool local\b", output), output_of(result)  # the variable won
    blobs = [b.name for b in pools_service.blob_service_client().get_container_client("overrides").list_blobs()]
    assert blobs and all(name.startswith("fromprofile/") for name in blobs)  # the untouched profile key applies
