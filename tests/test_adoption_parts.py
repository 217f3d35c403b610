"""Adoption's pure parts: the content key (what a task computes, one sha256 over a canonical encoding) and which
task of a dead run a job takes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from snakemake.iocontainers import Namedlist

from snakemake_executor_plugin_azbatch.adoption.content_key import (
    KEY_LENGTH, Unkeyable, canonical, job_content_key, key_from_display_name, key_of,
)
from snakemake_executor_plugin_azbatch.adoption.dead_tasks import (
    DeadRunTasks, DeadTask, adopted_lines, dead_task_of, link_expiry, run_started,
)
from snakemake_executor_plugin_azbatch.adoption.takeover import with_job_links
from snakemake_executor_plugin_azbatch.tasks.task_spec import display_name as task_display_name


def display_name(label: str, key: str | None) -> str:
    """task_spec.display_name of a job whose `name jobid aN` is `label`."""
    name, jobid, attempt = label.rsplit(" ", 2)
    return task_display_name(SimpleNamespace(name=name, jobid=jobid, attempt=int(attempt[1:])), key)

pytestmark = pytest.mark.quick

FILES = {"/wf/scripts/a.py": b"print(1)\n", "/wf/envs/e.yaml": b"dependencies: [python]\n"}


def _job(**changes):
    rule = SimpleNamespace(shellcmd="sort {input} > {output}", run_func_src=None, wrapper=None, script=None,
                           notebook=None, basedir="/wf")
    for name in ("shellcmd", "script", "wrapper"):
        if name in changes:
            setattr(rule, name, changes.pop(name))
    fields = dict(name="sort", rule=rule, wildcards_dict={"s": "a"}, params=Namedlist(fromdict={"n": 3}),
                  threads=2, resources={"mem_mb": 1000, "_cores": 2, "runtime": 10, "tmpdir": "/tmp"},
                  container_img_url=None, output=["out/a.txt"], conda_env=None, is_group=lambda: False)
    fields.update(changes)
    return SimpleNamespace(**fields)


def _key(job=None, inputs=None, pool="pool-a", image=None, version="9.1", storage="https://acct/staging"):
    return job_content_key(job or _job(), inputs={"in/a.txt": "aa" * 32} if inputs is None else inputs,
                           pool_id=pool, image=image, snakemake_version=version, storage=storage,
                           read_file=FILES.__getitem__)


def test_the_key_is_stable_and_changes_with_everything_that_changes_the_output():
    base = _key()
    assert base == _key() and len(base) == KEY_LENGTH == 32
    changed = {
        "an input byte": _key(inputs={"in/a.txt": "ab" * 32}),
        "another input": _key(inputs={"in/a.txt": "aa" * 32, "in/b.txt": "aa" * 32}),
        "a param": _key(_job(params=Namedlist(fromdict={"n": 4}))),
        "a param's name": _key(_job(params=Namedlist(fromdict={"m": 3}))),
        "a param's type": _key(_job(params=Namedlist(fromdict={"n": "3"}))),
        "a wildcard": _key(_job(wildcards_dict={"s": "b"})),
        "the code": _key(_job(shellcmd="sort -r {input} > {output}")),
        "threads": _key(_job(threads=4)),
        "a resource": _key(_job(resources={"mem_mb": 2000})),
        "the pool": _key(pool="pool-b"),
        "the task image": _key(image="ubuntu:24.04"),
        "Snakemake's image": _key(_job(container_img_url="docker://x")),
        "Snakemake": _key(version="9.2"),
        "the staging container": _key(storage="https://acct/other"),
        "a script": _key(_job(shellcmd=None, script="scripts/a.py")),
    }
    assert len({base, *changed.values()}) == len(changed) + 1, changed
    # What changes how long or where, not what: runtime, tmpdir, Snakemake's own _resources.
    assert _key(_job(resources={"mem_mb": 1000, "runtime": 99, "_nodes": 1})) == base
    assert _key(pool="POOL-A") == base  # Batch pool ids are case-insensitive


def test_script_content_is_in_the_key_and_an_unreadable_one_is_unkeyable():
    job = _job(shellcmd=None, script="scripts/a.py")
    first = _key(job)
    FILES["/wf/scripts/a.py"] = b"print(2)\n"
    try:
        assert _key(job) != first
    finally:
        FILES["/wf/scripts/a.py"] = b"print(1)\n"
    with pytest.raises(Unkeyable, match="script /wf/scripts/missing.py cannot be read"):
        job_content_key(_job(shellcmd=None, script="scripts/missing.py"), inputs={}, pool_id="p", image=None,
                        snakemake_version="9", read_file=lambda p: open(p, "rb").read())


def test_conda_environment_content_is_in_the_key():
    env = SimpleNamespace(content=b"dependencies: [python=3.11]\n")
    other = SimpleNamespace(content=b"dependencies: [python=3.12]\n")
    assert _key(_job(conda_env=env)) != _key(_job(conda_env=other)) != _key()


def test_the_encoding_is_canonical_and_unambiguous():
    assert key_of({"a": 1, "b": 2}) == key_of({"b": 2, "a": 1})
    # No free-form joins: neighbouring strings, or a string and a number, never encode alike.
    assert key_of({"x": ["ab", "c"]}) != key_of({"x": ["a", "bc"]})
    assert key_of({"x": 1}) != key_of({"x": "1"}) != key_of({"x": 1.0})
    assert key_of({"x": True}) != key_of({"x": 1})
    assert canonical({2, 1}) == canonical({1, 2})
    assert canonical(Namedlist(fromdict={"a": 1})) != canonical([1])


def test_what_has_no_faithful_text_makes_a_job_unkeyable():
    with pytest.raises(Unkeyable, match="function"):
        _key(_job(params=Namedlist(fromdict={"f": len})))
    with pytest.raises(Unkeyable, match="stable text"):
        _key(_job(params=Namedlist(fromdict={"o": object()})))


def test_group_jobs_are_keyed_by_every_member():
    a, b = _job(), _job(name="count", wildcards_dict={"s": "b"})
    group = SimpleNamespace(jobs=[a, b], groupid="g1", is_group=lambda: True)
    swapped = SimpleNamespace(jobs=[b, a], groupid="g1", is_group=lambda: True)
    assert _key(group) == _key(swapped) != _key(a)
    assert _key(SimpleNamespace(jobs=[a], groupid="g1", is_group=lambda: True)) != _key(group)


def test_the_key_is_the_last_word_of_the_task_display_name():
    key = _key()
    assert display_name("sort 3 a1", key) == f"sort 3 a1 {key}"  # was `sort 3 attempt 1`: the key fits 2 KB
    assert key_from_display_name(display_name("sort 3 a1", key)) == key
    assert display_name("sort 3 a1", None) == "sort 3 a1" and key_from_display_name("sort 3 a1") is None
    assert key_from_display_name("sort 3 attempt 1") is None  # an older plugin's task
    assert key_from_display_name(f"x {key[:-1]}!") is None and key_from_display_name(None) is None
    long = display_name("r" * 2000 + " 3 a1", key)
    assert len(long) == 1024 and key_from_display_name(long) == key


def _listed(task_id, state, key="ab" * 16, result=None, exit_code=None, prefix=None, created=0):
    base = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    info = SimpleNamespace(result=result, exit_code=exit_code, start_time=base + timedelta(seconds=created + 5),
                           end_time=base + timedelta(seconds=65) if state == "completed" else None)
    output = SimpleNamespace(destination=SimpleNamespace(container=SimpleNamespace(
        path=f"{prefix or task_id}/files/out/a.txt", container_url=_link("run", "10:30:00"))))
    return SimpleNamespace(id=task_id, state=SimpleNamespace(value=state), execution_info=info,
                           display_name=display_name(f"{task_id} 1 a1", key),
                           output_files=[output], creation_time=base + timedelta(seconds=created),
                           resource_files=[SimpleNamespace(http_url=_link("staging/blob", "10:20:00")),
                                           SimpleNamespace(http_url="https://example.org/public.tar.gz")],
                           environment_settings=[SimpleNamespace(name="X", value="plain")])


def _link(path: str, expiry: str) -> str:
    return f"https://acct.blob.core.windows.net/{path}?se=2026-12-07T{expiry.replace(':', '%3A')}Z&sp=r&sig=abc"


def _dead(task, job="sm-x-1"):
    return dead_task_of(task, job, "20261207T100200-abcdef", "host-h")


def test_only_waiting_running_and_succeeded_tasks_with_a_key_can_be_taken():
    assert _dead(_listed("t1", "running")).state == "running"
    assert _dead(_listed("t2", "active")).state == "active"
    assert _dead(_listed("t3", "completed", result="success", exit_code=0)).finished
    assert _dead(_listed("t4", "completed", result="failure", exit_code=1)) is None  # submitted anew
    assert _dead(_listed("t5", "running", key=None)) is None  # an older plugin's task: no key
    assert _dead(_listed("t6-renewed", "running", prefix="t6")).blob_prefix == "t6/"  # a replaced task's prefix


def test_a_key_is_taken_once_preferring_finished_then_furthest_along_then_newest():
    k1, k2 = "a1" * 16, "b2" * 16
    tasks = [_dead(_listed("old", "running", key=k1, created=0)),
             _dead(_listed("done", "completed", key=k1, result="success", exit_code=0, created=1)),
             _dead(_listed("waiting", "active", key=k2, created=5)),
             _dead(_listed("running", "running", key=k2, created=2))]
    found = DeadRunTasks(tasks, {"sm-x-1": [t.task_id for t in tasks], "sm-x-2": ["other"]})
    assert found.claim(k1).task_id == "done"
    assert found.claim(k1) is None  # once
    assert found.claim(k2).task_id == "running"
    assert found.claim(None) is None and found.claim("cd" * 16) is None
    assert sorted(t.task_id for t in found.unclaimed_running()) == ["old", "waiting"]
    assert found.idle_jobs() == ["sm-x-2"]
    now = datetime(2026, 12, 7, 10, 2, tzinfo=timezone.utc)
    assert [t.compute_seconds(now) for t in found.claimed.values()] == [59.0, 113.0]


def test_a_waiting_task_knows_when_the_first_of_its_links_and_its_jobs_expires():
    at = lambda hms: datetime.fromisoformat(f"2026-12-07T{hms}+00:00")  # noqa: E731
    assert link_expiry(_link("c", "10:20:00")) == at("10:20:00") and link_expiry("https://x/y") is None
    waiting, running = _dead(_listed("w", "active")), _dead(_listed("r", "running"))
    assert waiting.waiting and waiting.links_expire == at("10:20:00")  # the earlier of its two links
    assert running.links_expire == at("10:20:00") and not running.waiting
    assert _dead(_listed("f", "completed", result="success", exit_code=0)).links_expire is None
    assert with_job_links(waiting, at("10:10:00")).links_expire == at("10:10:00")  # its job's links end first
    assert with_job_links(waiting, at("10:40:00")) is waiting and with_job_links(waiting, None) is waiting
    assert with_job_links(running, at("10:10:00")) is running  # started: its job's preparation is done


def test_one_line_per_dead_run_says_what_was_adopted():
    tasks = [_dead(_listed(f"r{i}", "running")) for i in range(3)]
    tasks += [_dead(_listed(f"f{i}", "completed", result="success", exit_code=0)) for i in range(5)]
    assert adopted_lines(tasks) == [
        "azbatch: adopted 3 running and 5 finished task(s) of the run started 2026-12-07 10:02 UTC on host host-h; "
        "nothing resubmitted for them"]
    tasks.append(_dead(_listed("w", "active")))
    assert adopted_lines(tasks)[0].startswith("azbatch: adopted 3 running, 1 waiting and 5 finished task(s) of ")
    assert run_started("garbage") == ""


def test_a_job_taken_over_names_the_container_of_the_run_that_started_its_tasks():
    from snakemake_executor_plugin_azbatch.run.recovery import EarlierRuns, OrphanJob

    own = OrphanJob("sm-a", "run-2", "h", dead="gone")
    taken = OrphanJob("sm-b", "run-2", "h", dead="gone", adopted_from="run-1")
    assert (own.container_run, taken.container_run) == ("run-2", "run-1")
    assert EarlierRuns(dead=[own, taken]).dead_runs == ["run-2", "run-1"]
