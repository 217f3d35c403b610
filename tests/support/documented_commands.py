"""The `az` lines the README and docs/ show, as the shell hands them to `az` (a stub on PATH records them)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


DOCUMENTS = ("README.md", *sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md")))


INLINE = re.compile(r"`(az [^`]+)`")


SUBSTITUTION = re.compile(r"\$\((az [^)]*)\)")


STUB_OUTPUT = "stub-output"


# Shell variables the docs mean the shell to fill in: `i`, the counter of the `for` loop in the table "From `az
# batch` scripts to the plugin". Any other `$NAME` must reach az as written (Batch's formula variables).
SHELL_VARIABLES = {"i": "7"}


def shell_lines(markdown: str, spans: bool = True) -> list[str]:
    """Each documented line that runs `az`, as the shell would get it: code spans that start with `az` (a span may
    wrap across lines), then lines that start with `az` or hold `$(az ...)` (e.g. `export VAR="$(az ...)"`), line
    continuations joined. spans=False: only the lines."""
    text = markdown.replace("\\\n", " ")
    lines = [" ".join(span.split()) for span in INLINE.findall(text)] if spans else []
    for line in INLINE.sub("", text).splitlines():
        line = line.strip()
        if line.startswith("az ") or "$(az " in line:
            lines.append(line)
    return lines


def documented_calls(markdown: str, tmp: Path) -> list[tuple[list[str], bool, str]]:
    """(arguments after `az` as the shell hands them over, named in prose?, the line) for every az invocation the
    document shows; a code span counts as prose, and its placeholder words (`...`) are left out."""
    found = []
    prose = set(shell_lines(markdown)) - set(shell_lines(markdown, spans=False))
    for line in shell_lines(markdown):
        _, calls = run_with_stub(line, tmp)
        mention = line in prose
        found += [([a for a in args if not (mention and a.endswith("..."))], mention, line) for args in calls]
    return found


def expected_calls(line: str) -> list[list[str]]:
    """The argument lists `az` must receive, in the order the shell runs them: substitutions first."""
    calls = [shlex.split(inner, comments=True)[1:] for inner in SUBSTITUTION.findall(line)]
    if line.startswith("az "):
        calls.append(shlex.split(line, comments=True)[1:])
    return calls


def write_stub(directory: Path) -> None:
    stub = directory / "az"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['AZ_STUB_LOG'], 'a') as log:\n"
        "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"print({STUB_OUTPUT!r})\n"
    )
    stub.chmod(0o755)


def run_with_stub(line: str, tmp: Path) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Runs `line` with bash (no profile, a bare environment) and the stub; its result and the recorded calls."""
    stub_dir = tmp / "stub"
    stub_dir.mkdir(exist_ok=True)
    write_stub(stub_dir)
    log = tmp / "calls.jsonl"
    log.write_text("")
    env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "HOME": str(tmp), "AZ_STUB_LOG": str(log), "LC_ALL": "C",
           **SHELL_VARIABLES}
    result = subprocess.run(["bash", "--noprofile", "--norc", "-c", line], env=env, capture_output=True,
                            text=True, timeout=30)
    calls = [json.loads(entry) for entry in log.read_text().splitlines()]
    return result, calls
