"""The plugin over Microsoft Entra ID against `azbatch-local --entra`: a workflow with no key at all (bearer tokens
to Batch over HTTPS, user-delegation SAS for the tasks, tokens renewed during the run), one clear line for each
credential problem (wrong secret, no credential, wrong audience, http URL, untrusted CA) with nothing created, and
one line per status round while a credential stops working mid-run."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from support.services import ENTRA_TOKEN_LIFETIME_S
from support.executor_runs import delta, output_of, snakemake_command, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.auth.bearer_auth import BATCH_AUDIENCE, STORAGE_AUDIENCE
from snakemake_executor_plugin_azbatch.local.auth.secure_endpoints import KEY_VARIABLES
from snakemake_executor_plugin_azbatch.local.auth.token_authority import EntraConfig

SECRET_LIKE = "not-the-secret-0123456789"


def keyless_env(service, container: str, **extra: str) -> dict[str, str]:
    """The shell of someone who sourced env.sh of `azbatch-local serve --entra`: no key anywhere."""
    env = {**os.environ, **service.env}
    for name in (*KEY_VARIABLES, "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT"):
        env.pop(name, None)
    env.update(SNAKEMAKE_AZBATCH_STORAGE_CONTAINER=container, SNAKEMAKE_AZBATCH_STATUS_INTERVAL="0.5", **extra)
    return {name: value for name, value in env.items() if value is not None}


def run(service, workdir, container: str, *args: str, drop: tuple[str, ...] = (), **extra: str):
    env = keyless_env(service, container, **extra)
    for name in drop:
        env.pop(name, None)
    return subprocess.run(snakemake_command(*args), cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error: azbatch:")]


def refusals(metrics: dict, section: str) -> int:
    return sum(n for op in metrics.get(section, {}).values() for code, n in op["statuses"].items() if code in ("401", "403"))


def test_a_workflow_runs_with_no_keys_over_https_and_outlives_its_tokens(entra_service, tmp_path):
    service = entra_service
    tenant = service.authority.config.tenant_id
    workdir = write_files(
        tmp_path / "keyless",
        {
            "data/input.txt": "staged through a user-delegation SAS\n",
            "Snakefile": f"""
                rule all:
                    input: "summary.txt"

                rule part:
                    input: "data/input.txt"
                    output: "parts/{{i}}.txt"
                    shell: "cat {{input}} > {{output}}; echo part {{wildcards.i}} >> {{output}}"

                # Longer than a token lives: status rounds, downloads and the next submission need new tokens.
                rule wait:
                    input: expand("parts/{{i}}.txt", i=[1, 2])
                    output: "waited.txt"
                    shell: "sleep {ENTRA_TOKEN_LIFETIME_S + 3}; cat {{input}} > {{output}}"

                rule summary:
                    input: "waited.txt"
                    output: "summary.txt"
                    shell: "wc -l < {{input}} > {{output}}"
            """,
        },
    )
    before, tokens_before = service.metrics(), service.authority.stats()
    started = time.monotonic()
    result = run(service, workdir, "keyless", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    elapsed = time.monotonic() - started
    after, tokens_after = service.metrics(), service.authority.stats()
    client = service.batch_client()  # shared key, for inspection only
    jobs = [job for job in client.list_jobs() if job.id.startswith("sm-keyless-")]
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "summary.txt").read_text().strip() == "4"
        assert elapsed > ENTRA_TOKEN_LIFETIME_S
        # Bearer tokens were the only way in, every request was accepted, and tokens were renewed.
        assert refusals(after, "operations") == refusals(before, "operations")
        assert refusals(after, "storage") == refusals(before, "storage")
        assert delta(before, after, "operations", "Tasks_CreateTaskCollection") >= 3
        for audience in (BATCH_AUDIENCE, STORAGE_AUDIENCE):
            assert tokens_after.get(f"token:{audience}", 0) - tokens_before.get(f"token:{audience}", 0) >= 2
        # Tasks read inputs and write outputs through user-delegation SAS URLs of the service's tenant.
        assert len(jobs) == 1
        tasks = list(client.list_tasks(jobs[0].id))
        urls = [rf.http_url for task in tasks for rf in task.resource_files or []]
        urls += [out.destination.container.container_url for task in tasks for out in task.output_files or []]
        assert urls and all("skoid=" in url and f"sktid={tenant}" in url for url in urls)
        assert "sig=" not in (result.stdout + result.stderr).replace("sig=REDACTED", "")
    finally:
        for job in jobs:
            client.begin_delete_job(job.id, polling_interval=1).result()


def test_a_credential_revoked_during_a_run_is_named_in_one_line_and_the_run_recovers(entra_service, tmp_path):
    """While the secret is refused, each status round says why in one line; once it works again, the run ends."""
    service = entra_service
    authority = service.authority
    workdir = write_files(
        tmp_path / "revoked",
        {"Snakefile": 'rule a:\n    output: "a.txt"\n    shell: "sleep 30; echo done > {output}"\n'},
    )
    batch_tokens = f"token:{BATCH_AUDIENCE}"
    before = authority.stats().get(batch_tokens, 0)
    process = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=keyless_env(service, "revoked"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    secret = authority.config.client_secret
    try:
        # Pool check, job creation and submission take one token each; the next one is the first status round.
        wait_for(lambda: process.poll() is not None or authority.stats().get(batch_tokens, 0) - before >= 4,
                 120, "no status round", interval=0.1)
        assert process.poll() is None, "the run ended before its first status round"
        authority.config.client_secret = "rotated-" + secret  # as if the secret were revoked mid-run
        time.sleep(15)  # longer than the adaptive status interval can grow to (10 x 1 s on loopback)
    finally:
        authority.config.client_secret = secret
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    assert (workdir / "a.txt").read_text().strip() == "done"
    warnings = [line for line in output.splitlines() if "failed, retrying:" in line]
    assert warnings and all(
        line.startswith("azbatch: listing tasks of sm-revoked-") and line.count("azbatch:") == 1
        and "(AADSTS7000215): its client secret was rejected" in line for line in warnings
    ), output
    assert "Traceback" not in output and "rotated-" not in output


@pytest.mark.parametrize(
    ("env", "drop", "expected"),
    [
        ({"AZURE_CLIENT_SECRET": SECRET_LIKE}, (), ["AADSTS7000215", "AZURE_CLIENT_SECRET", "service principal"]),
        ({"AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential"}, ("AZURE_CLIENT_SECRET",),
         ["no Microsoft Entra ID credential found", "az login"]),
        ({"ACCOUNT_URL_SCHEME": "http"}, (), ["http:// URL", "only sent over https"]),
        ({"REQUESTS_CA_BUNDLE": "PUBLIC_ROOTS"}, ("SSL_CERT_FILE", "CURL_CA_BUNDLE"),
         ["TLS certificate", "not trusted", "REQUESTS_CA_BUNDLE"]),
    ],
    ids=["wrong-secret", "no-credential", "http-url", "untrusted-ca"],
)
def test_credential_problems_end_with_one_line_and_nothing_created(entra_service, tmp_path, env, drop, expected):
    service = entra_service
    workdir = write_files(tmp_path / "cred", {"Snakefile": 'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'})
    env = dict(env)
    if env.pop("ACCOUNT_URL_SCHEME", None):
        env["SNAKEMAKE_AZBATCH_ACCOUNT_URL"] = service.account_url.replace("https://", "http://")
    if env.get("REQUESTS_CA_BUNDLE") == "PUBLIC_ROOTS":
        import certifi

        env["REQUESTS_CA_BUNDLE"] = certifi.where()
    before = service.metrics()
    result = run(service, workdir, "cred", drop=drop, **env)
    after = service.metrics()
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1 and all(text in lines[0] for text in expected), output_of(result)
    assert "Traceback" not in result.stdout + result.stderr
    assert SECRET_LIKE not in result.stdout + result.stderr
    assert service.authority.config.client_secret not in result.stdout + result.stderr
    assert delta(before, after, "operations", "Jobs_CreateJob") == 0


def test_a_token_for_another_audience_is_one_line(make_service, tmp_path):
    """An account that expects another resource's tokens (here: another cloud's Batch) refuses the plugin's."""
    service = make_service(entra=EntraConfig(batch_audience="https://batch.chinacloudapi.cn/"), pools=["local:1:1"])
    workdir = write_files(tmp_path / "aud", {"Snakefile": 'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'})
    result = run(service, workdir, "aud")
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, output_of(result)
    assert "refused the Microsoft Entra ID token" in lines[0] and f"audience '{BATCH_AUDIENCE}'" in lines[0]
    assert "same Azure cloud" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert list(service.batch_client().list_jobs()) == []
