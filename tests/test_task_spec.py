"""Job → Batch task translation, without any network: ids, command line, env, slots, constraints, output files."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from snakemake_executor_plugin_azbatch.tasks import task_spec
from snakemake_executor_plugin_azbatch.config import AppPackage
from snakemake_executor_plugin_azbatch.staging import BlobLayout

pytestmark = pytest.mark.quick


class Path_(str):
    """A Snakemake-like IO file: a str with flags."""

    def __new__(cls, value, **flags):
        obj = super().__new__(cls, value)
        obj.flags = flags
        obj.is_directory = bool(flags.get("directory"))
        return obj


@dataclass
class FakeJob:
    name: str
    jobid: int
    attempt: int = 1
    threads: int = 1
    input: list = field(default_factory=list)
    output: list = field(default_factory=list)
    log: list = field(default_factory=list)
    benchmark: str | None = None
    resources: dict = field(default_factory=dict)

    def is_group(self):
        return False


@dataclass
class FakeGroup:
    groupid: str
    jobs: list
    jobid: str = "5f1c2b7e-0000-4000-8000-000000000001"
    attempt: int = 1
    resources: dict = field(default_factory=dict)

    name = property(lambda self: self.groupid)

    def is_group(self):
        return True

    @property
    def input(self):
        products = {str(f) for j in self.jobs for f in j.output}
        return [f for j in self.jobs for f in j.input if str(f) not in products]

    @property
    def output(self):
        inputs = {str(f) for j in self.jobs for f in j.input}
        return [f for j in self.jobs for f in j.output if str(f) not in inputs]


VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def test_task_id_is_deterministic_valid_and_shows_rule_and_attempt():
    job = FakeJob("align_reads", 12, attempt=2, output=[Path_("out/a.bam")])
    tid = task_spec.task_id(job)
    assert tid == task_spec.task_id(FakeJob("align_reads", 12, attempt=2, output=[Path_("out/a.bam")]))
    assert VALID_ID.match(tid)
    assert tid.startswith("align_reads-12-a2-")
    assert task_spec.task_id(FakeJob("align_reads", 12, attempt=3, output=[Path_("out/a.bam")])) != tid


def test_task_id_of_long_or_odd_rule_names_stays_within_64_characters_and_unique():
    a = FakeJob("r" * 200 + "_a", 1)
    b = FakeJob("r" * 200 + "_b", 1)
    assert len(task_spec.task_id(a)) == 64 and VALID_ID.match(task_spec.task_id(a))
    assert task_spec.task_id(a) != task_spec.task_id(b)
    odd = task_spec.task_id(FakeJob("räte.rule name", 7, attempt=1))
    assert VALID_ID.match(odd) and odd.startswith("r-te-rule-name-7-a1-")


def test_group_task_id_names_the_group():
    group = FakeGroup("foo", [FakeJob("a", 1), FakeJob("b", 2)], attempt=2)
    tid = task_spec.task_id(group)
    assert tid.startswith("group-foo-") and "-a2-" in tid and VALID_ID.match(tid)


def test_job_id_is_valid_and_shows_workflow_and_pool():
    jid = task_spec.job_id("my workflow", "gpu-pool", "20250101T000000-abcdef")
    assert VALID_ID.match(jid)
    assert jid.startswith("sm-my-workflow-") and jid.endswith("-gpu-pool")
    assert len(task_spec.job_id("w" * 100, "p" * 64, "20250101T000000-abcdef")) <= 64


def test_job_files_of_a_single_job():
    job = FakeJob(
        "b",
        2,
        input=[Path_("data/in 1.txt"), Path_("res/ü.txt")],
        output=[Path_("out/x.txt"), Path_("outdir", directory=True), Path_("tmp.txt", temp=True)],
        log=[Path_("logs/b.log")],
        benchmark=Path_("bench/b.tsv"),
    )
    files = task_spec.job_files(job)
    assert files.inputs == ["data/in 1.txt", "res/ü.txt"]
    assert files.outputs == [
        task_spec.OutputPath("out/x.txt"),
        task_spec.OutputPath("outdir", directory=True),
        task_spec.OutputPath("tmp.txt", required=False),
    ]
    assert files.logs == [task_spec.OutputPath("logs/b.log", required=False), task_spec.OutputPath("bench/b.tsv", required=False)]


def test_job_files_of_a_group_bring_back_every_members_products_and_stage_only_outside_inputs():
    a = FakeJob("a", 1, input=[Path_("raw.txt")], output=[Path_("mid.txt")], log=[Path_("a.log")])
    b = FakeJob("b", 2, input=[Path_("mid.txt")], output=[Path_("final.txt")])
    files = task_spec.job_files(FakeGroup("g", [a, b]))
    assert files.inputs == ["raw.txt"]
    assert [o.path for o in files.outputs] == ["mid.txt", "final.txt"]
    assert [o.path for o in files.logs] == ["a.log"]


def test_storage_files_are_left_to_the_storage_provider():
    storage = Path_("s3://bucket/x")
    storage.is_storage = True
    files = task_spec.job_files(FakeJob("a", 1, input=[storage], output=[storage]))
    assert files.inputs == [] and files.outputs == []


def test_output_files_outputs_on_success_logs_and_batch_logs_on_completion():
    files = task_spec.JobFiles(
        outputs=[task_spec.OutputPath("out/x [1].txt"), task_spec.OutputPath("dir", directory=True)],
        logs=[task_spec.OutputPath("logs/a.log", required=False), task_spec.OutputPath("top.log", required=False)],
    )
    layout = BlobLayout("pre/")
    task_prefix = layout.task_prefix("t")
    specs = task_spec.output_file_specs(
        files, layout.task_files_dir(task_prefix), layout.task_batch_logs_dir(task_prefix), "http://h/c?sv=1&sig=x"
    )
    by_pattern = {s["filePattern"]: s for s in specs}
    assert by_pattern["out/x [[]1].txt"]["uploadOptions"]["uploadCondition"] == "tasksuccess"
    # An escaped name makes the pattern a wildcard: the path is then the virtual directory of its fixed part,
    # so the blob is still `files/out/x [1].txt` (not `files/out/x [1].txt/x [1].txt`).
    assert by_pattern["out/x [[]1].txt"]["destination"]["container"]["path"] == "t/files/out"
    assert by_pattern["dir/**/*"]["destination"]["container"]["path"] == "t/files/dir"
    # Optional files: a one-character class keeps the pattern a wildcard, so a missing log is not an error.
    log = by_pattern["logs/a.lo[g]"]
    assert log["uploadOptions"]["uploadCondition"] == "taskcompletion"
    assert log["destination"]["container"]["path"] == "t/files/logs"
    assert by_pattern["top.lo[g]"]["destination"]["container"]["path"] == "t/files"
    # Batch's stdout.txt and stderr.txt (next to the working directory): one wildcard spec, blobs batch/<name>.
    spec = by_pattern["../std*.txt"]
    assert spec["destination"]["container"]["path"] == "t/batch"
    assert spec["uploadOptions"]["uploadCondition"] == "taskcompletion"
    assert all(s["destination"]["container"]["containerUrl"] == "http://h/c?sv=1&sig=x" for s in specs)
    # With a directory output, the node's list of its empty directories comes back too (exact name, on success).
    listed = by_pattern[".azbatch-empty-dirs.json"]
    assert listed["destination"]["container"]["path"] == "t/files/.azbatch-empty-dirs.json"
    assert listed["uploadOptions"]["uploadCondition"] == "tasksuccess"
    assert len(specs) == 6


def test_a_task_without_directory_outputs_gets_no_list_of_empty_directories():
    files = task_spec.JobFiles(outputs=[task_spec.OutputPath("a.txt")], logs=[task_spec.OutputPath("l", required=False)])
    specs = task_spec.output_file_specs(files, "p/files", "p/batch", "http://h/c")
    assert [s["filePattern"] for s in specs] == ["a.txt", "[l]", "../std*.txt"]


@pytest.mark.parametrize(
    "path, directory, pattern, destination",
    [
        ("plain.txt", False, "plain.txt", "f/plain.txt"),
        ("a b/ü'\"#%.txt", False, "a b/ü'\"#%.txt", "f/a b/ü'\"#%.txt"),
        ("q?/s*.txt", False, "q[?]/s[*].txt", "f"),
        ("d[1]", True, "d[[]1]/**/*", "f"),
        ("x/d", True, "x/d/**/*", "f/x/d"),
    ],
)
def test_output_blob_is_always_the_path_under_the_files_dir(path, directory, pattern, destination):
    spec = task_spec.output_file_spec(task_spec.OutputPath(path, directory=directory), "f", "http://h/c", "tasksuccess", None)
    assert spec["filePattern"] == pattern
    assert spec["destination"]["container"]["path"] == destination


def test_output_files_with_managed_identity_carry_the_identity_reference():
    files = task_spec.JobFiles(outputs=[task_spec.OutputPath("x")])
    identity = {"resourceId": "/subscriptions/s/resourceGroups/g/providers/x/id"}
    specs = task_spec.output_file_specs(files, "p/files", "p/batch", "http://h/c", identity)
    assert all(s["destination"]["container"]["identityReference"] == identity for s in specs)


@pytest.mark.parametrize(
    "threads, slots, expected, warns",
    [(4, 1, None, False), (1, 4, 1, False), (3, 4, 3, False), (8, 4, 4, True), (0, 2, 1, False)],
)
def test_required_slots(threads, slots, expected, warns):
    value, warning = task_spec.required_slots(threads, slots)
    assert value == expected
    assert bool(warning) == warns


def test_runtime_minutes_become_max_wall_clock_time():
    assert task_spec.runtime_seconds({"runtime": 90}) == 5400
    assert task_spec.runtime_seconds({}) is None
    assert task_spec.runtime_seconds({"runtime": "1h"}) is None  # Snakemake normalises runtimes to minutes
    body = task_spec.task_body(task_spec.TaskRequest(id="t", display_name="t", script="true", max_wall_clock_seconds=5400))
    assert body["constraints"] == {"maxWallClockTime": "PT5400S"}  # no retries: Batch's default 0


def test_task_body_runs_bash_keeps_env_out_of_the_command_line_and_disables_batch_retries():
    secret = "s3cr3t value'with quote"
    script = "python3 -m snakemake --snakefile 'Snakefile' --target-jobs 'a:x=1'"
    body = task_spec.task_body(
        task_spec.TaskRequest(
            id="a-1-a1-abc",
            display_name="a 1",
            script=script,
            env={"MY_TOKEN": secret, "A": "1"},
            resource_files=[{"httpUrl": "http://h/c/b?sig=x", "filePath": "Snakefile"}],
            slots=2,
            container_image="python:3.11",
            application_packages=[AppPackage("tools", "1.0").reference(), AppPackage("other", None).reference()],
        )
    )
    assert body["commandLine"].startswith("/bin/bash -c ")
    assert shlex.split(body["commandLine"]) == ["/bin/bash", "-c", script]
    assert secret not in body["commandLine"]
    assert body["environmentSettings"] == [{"name": "A", "value": "1"}, {"name": "MY_TOKEN", "value": secret}]
    assert "constraints" not in body  # Batch's default: no retries
    assert body["requiredSlots"] == 2
    assert body["containerSettings"]["imageName"] == "python:3.11"
    assert body["applicationPackageReferences"] == [{"applicationId": "tools", "version": "1.0"}, {"applicationId": "other"}]


def test_task_body_omits_optional_parts():
    body = task_spec.task_body(task_spec.TaskRequest(id="t", display_name="t", script="true"))
    assert "requiredSlots" not in body and "containerSettings" not in body
    assert "applicationPackageReferences" not in body and "constraints" not in body


def test_preparation_task_runs_its_script_once_per_node_and_in_the_tasks_image():
    prep = task_spec.preparation_task("set -e\necho part", [{"httpUrl": "u", "filePath": "f"}])
    assert shlex.split(prep["commandLine"])[:2] == ["/bin/bash", "-c"]
    assert shlex.split(prep["commandLine"])[2] == "set -e\necho part"
    assert prep["waitForSuccess"] is True and prep["resourceFiles"] == [{"httpUrl": "u", "filePath": "f"}]
    assert "containerSettings" not in prep
    boxed = task_spec.preparation_task("true", [], "python:3.12-slim")
    assert boxed["containerSettings"]["imageName"] == "python:3.12-slim"


def test_app_package_env_var_follows_batch_linux_naming():
    assert AppPackage("my-tools", "1.0.2").env_var == "AZ_BATCH_APP_PACKAGE_my_tools_1_0_2"
    assert AppPackage("tools", None).env_var == "AZ_BATCH_APP_PACKAGE_tools"


def test_job_body_has_pool_prep_task_and_workflow_metadata():
    body = task_spec.job_body("sm-x", "pool", "snakemake x", workflow="/w/Snakefile", prep_task={"id": "p", "commandLine": "true"})
    assert body["poolInfo"] == {"poolId": "pool"}
    assert body["jobPreparationTask"]["id"] == "p"
    assert body["metadata"] == [{"name": "snakemake-workflow", "value": "/w/Snakefile"}]
    assert body["onAllTasksComplete"] == "noaction"


def test_task_collections_are_split_by_count_and_by_size():
    from snakemake_executor_plugin_azbatch.azure_api.batch_client import request_chunks

    small = [{"id": f"t{i}"} for i in range(250)]
    assert [len(c) for c in request_chunks(small)] == [100, 100, 50]
    big = [{"id": f"t{i}", "resourceFiles": [{"httpUrl": "x" * 1000, "filePath": str(j)} for j in range(100)]}
           for i in range(30)]
    chunks = request_chunks(big)
    assert sum(len(c) for c in chunks) == 30 and [b["id"] for c in chunks for b in c] == [b["id"] for b in big]
    assert all(len(json.dumps(c)) < 1_000_000 for c in chunks) and len(chunks) > 1


def test_the_run_wide_snakemake_command_is_a_shell_function_taking_the_job_arguments():
    import subprocess

    definition = task_spec.snakemake_function("printf '[%s]' --snakefile 'Snake file' \"$@\" --mode 'remote'")
    script = f"{definition} && {task_spec.SNAKEMAKE_FUNCTION} --target-jobs 'r:i=a b' --cores 'all'"
    out = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "[--snakefile][Snake file][--target-jobs][r:i=a b][--cores][all][--mode][remote]"


def test_request_bodies_go_out_as_compact_json_with_the_content_length_to_match():
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.rest import HttpRequest

    from snakemake_executor_plugin_azbatch.azure_api.batch_client import CompactJsonPolicy

    value = {"value": [{"id": "t1", "commandLine": "echo ü", "resourceFiles": [{"filePath": "a b"}]}]}
    request = HttpRequest("POST", "http://x/jobs/j/addtaskcollection", content=json.dumps(value),
                          headers={"content-type": "application/json; odata=minimalmetadata"})
    CompactJsonPolicy().on_request(PipelineRequest(request, PipelineContext(None)))
    body = request.content
    assert json.loads(body) == value and b", " not in body and b": " not in body
    assert request.headers["Content-Length"] == str(len(body))
    assert request.headers["content-type"] == "application/json; odata=minimalmetadata"
