"""Exact names: outputs whose names hold spaces, unicode, quotes, `[ ] * ?`, `#` and `%` come back as the files
(and directories) they are, and go up again as inputs of the next rule; an output that comes back wrong fails
the job with one line."""

from __future__ import annotations

import pytest
from support.executor_runs import output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.tasks.output_check import output_problem
from snakemake_executor_plugin_azbatch.tasks.task_spec import OutputPath

NAMES = [
    "sp ace.txt",
    "ünïcødé-名前.txt",
    "quo'te.txt",
    'dquo"te.txt',
    "x[1].txt",
    "br]ack.txt",
    "st*r.txt",
    "q?.txt",
    "ha#sh.txt",
    "pct%20.txt",
]


def test_every_character_class_round_trips(local_service, tmp_path):
    workdir = tmp_path / "exact-names"
    names = ", ".join(repr("out/" + n) for n in NAMES)
    write_files(
        workdir,
        {
            "Snakefile": f"""
                NAMES = [{names}]

                rule all:
                    input: "joined.txt", "d [1]#%"

                rule make:
                    output: NAMES
                    run:
                        for path in output:
                            with open(path, "w") as f:
                                f.write("content of " + path)

                rule dir:
                    output: directory("d [1]#%")
                    shell: "mkdir -p {{output:q}}/s?b && echo inner > {{output:q}}/s?b/f*le.txt"

                rule join:
                    input: NAMES
                    output: "joined.txt"
                    run:
                        with open(output[0], "w") as out:
                            for path in input:
                                out.write(open(path).read() + "\\n")
            """
        },
    )
    # No one reads this run's report: --azbatch-no-report writes none and says none.
    result = run_snakemake(local_service, workdir, container="exact", SNAKEMAKE_AZBATCH_NO_REPORT="true")
    assert result.returncode == 0, output_of(result)
    assert "run report:" not in output_of(result)
    assert not (workdir / ".snakemake" / "azbatch" / "reports").exists()
    for name in NAMES:
        path = workdir / "out" / name
        assert path.is_file(), (name, sorted(p.name for p in (workdir / "out").iterdir()))
        assert path.read_text() == f"content of out/{name}"
    assert (workdir / "joined.txt").read_text() == "".join(f"content of out/{n}\n" for n in NAMES)
    assert (workdir / "d [1]#%" / "s?b" / "f*le.txt").read_text() == "inner\n"


@pytest.mark.quick
def test_an_output_of_the_wrong_kind_or_missing_is_named(tmp_path):
    (tmp_path / "f.txt").mkdir()
    (tmp_path / "d").write_text("x")
    (tmp_path / "ok.txt").write_text("x")
    assert output_problem([OutputPath("ok.txt")], str(tmp_path)) is None
    assert output_problem([OutputPath("f.txt")], str(tmp_path)) == "output file 'f.txt' came back as a directory"
    assert output_problem([OutputPath("d", directory=True)], str(tmp_path)) == "output directory 'd' came back as a file"
    assert output_problem([OutputPath("gone")], str(tmp_path)) == "output file 'gone' did not come back from the node"
    assert output_problem([OutputPath("gone", required=False)], str(tmp_path)) is None
