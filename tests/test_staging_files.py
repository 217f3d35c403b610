"""Pure parts of how files travel (no service): the staging record's trust in a file's state, empty directories
listed and recreated, and log tails read without reading whole files."""

from __future__ import annotations

import json
import os

import pytest

from snakemake_executor_plugin_azbatch.staging.record import FileState, StagingRecord, sha256_file

pytestmark = pytest.mark.quick


def rewrite_keeping_size_and_mtime(path, data: bytes) -> None:
    """What `cp -p` or `rsync -t` leave: new content, same size, the old mtime restored."""
    before = os.stat(path)
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_hash_is_trusted_only_while_size_mtime_ctime_and_inode_are_unchanged(tmp_path):
    f = tmp_path / "input.bin"
    f.write_bytes(b"A" * 100)
    record = StagingRecord(tmp_path / "record.json", "container")
    record.remember_hash(str(f), FileState.of(str(f)), sha256_file(str(f)))
    record.save()
    again = StagingRecord(tmp_path / "record.json", "container")
    assert again.known_hash(str(f), FileState.of(str(f))) == sha256_file(str(f))

    rewrite_keeping_size_and_mtime(f, b"B" * 100)
    state = FileState.of(str(f))
    assert (state.size, state.mtime_ns) == (again.hashes[str(f)][0], again.hashes[str(f)][1])  # the old check passed
    assert again.known_hash(str(f), state) is None

    # A new file renamed over the old one with the same size, mtime (and, by chance or by a restore, ctime): the
    # inode tells.
    g = tmp_path / "new.bin"
    g.write_bytes(b"C" * 100)
    record.remember_hash(str(f), FileState.of(str(f)), "digest-of-B")
    old = FileState.of(str(f))
    os.replace(g, f)
    assert FileState.of(str(f)).inode != old.inode
    assert record.known_hash(str(f), FileState(old.size, old.mtime_ns, old.ctime_ns, FileState.of(str(f)).inode)) \
        is None


def test_a_produced_blob_is_reused_only_for_unchanged_content(tmp_path):
    f = tmp_path / "out.txt"
    f.write_bytes(b"task wrote this")
    record = StagingRecord(tmp_path / "record.json", "container")
    record.remember_produced(str(f), FileState.of(str(f)), "runs/r/t/files/out.txt", sha256_file(str(f)))
    assert record.produced_blob(str(f), FileState.of(str(f))) == "runs/r/t/files/out.txt"
    # Touched (Snakemake does so with outputs): same content, new mtime and ctime: the content decides, and the
    # entry follows the new state.
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert record.produced_blob(str(f), FileState.of(str(f))) == "runs/r/t/files/out.txt"
    assert record.produced[str(f)][:4] == FileState.of(str(f)).key()
    rewrite_keeping_size_and_mtime(f, b"user edited thi")
    assert record.produced_blob(str(f), FileState.of(str(f))) is None


def test_a_record_of_an_older_version_is_dropped(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"version": 2, "hashes": {"/x": [1, 2, "abc"]}, "produced": {}}')
    assert StagingRecord(path, "container").hashes == {}


def test_empty_directories_of_inputs_are_listed_and_ordinary_tasks_do_not_grow(tmp_path):
    from snakemake_executor_plugin_azbatch.staging import node_commands
    from snakemake_executor_plugin_azbatch.staging.layout import NodePaths

    (tmp_path / "in/a").mkdir(parents=True)
    (tmp_path / "in/a/file.txt").write_text("x")
    (tmp_path / "in/empty").mkdir()
    (tmp_path / "in/deep/er").mkdir(parents=True)
    (tmp_path / "bare").mkdir()
    (tmp_path / "plain.txt").write_text("y")
    paths = NodePaths(str(tmp_path))
    inputs = [str(tmp_path / p) for p in ("in", "bare", "plain.txt")]
    assert paths.empty_dirs(inputs, "input") == ["bare", "in/deep/er", "in/empty"]
    assert NodePaths(str(tmp_path), (str(tmp_path / "in"),)).empty_dirs(inputs, "input") == ["bare"]  # mounted

    script = 'eval "$AZBATCH_TASK_PREFIX" && snakemake_task --target-jobs x'
    assert node_commands.with_directories(script, [], [], ".rec") == script
    made = node_commands.with_directories(script, ["in/empty", "odd dir"], [], ".rec")
    assert made == f"mkdir -p -- in/empty 'odd dir' && {script}"
    listed = node_commands.with_directories(script, [], ["out dir"], ".rec")
    assert listed.startswith(f"{script} && python3 ") and listed.endswith(" empty-dirs .rec 'out dir'")


def test_the_nodes_list_of_empty_directories_is_recreated_inside_directory_outputs_only(tmp_path):
    from snakemake_executor_plugin_azbatch.tasks.output_check import recreate_empty_dirs
    from snakemake_executor_plugin_azbatch.staging.node_helper import record_empty_dirs
    from snakemake_executor_plugin_azbatch.tasks.task_spec import OutputPath

    node = tmp_path / "node"
    for d in ("out/empty", "out/nested/deeper/leaf", "out/full"):
        (node / d).mkdir(parents=True)
    (node / "out/full/f.txt").write_text("f")
    record = node / "record.json"
    cwd = os.getcwd()
    os.chdir(node)
    try:
        record_empty_dirs(str(record), ["out", "missing"])
    finally:
        os.chdir(cwd)
    assert json.loads(record.read_text()) == {"version": 1, "dirs": ["out/empty", "out/nested/deeper/leaf"]}

    local = tmp_path / "local"
    outputs = [OutputPath("out", directory=True), OutputPath("other.txt")]
    assert recreate_empty_dirs(record.read_bytes(), outputs, str(local)) is None
    assert (local / "out/empty").is_dir() and (local / "out/nested/deeper/leaf").is_dir()
    for bad in ("../escape", "/abs", "other.txt", "outside/x"):
        problem = recreate_empty_dirs(json.dumps({"dirs": [bad]}).encode(), outputs, str(local))
        assert problem and "not inside a directory output" in problem, bad
    assert "not a list" in recreate_empty_dirs(b"{", outputs, str(local))
    assert not (tmp_path / "escape").exists() and not (local / "outside").exists()
