"""Which `SNAKEMAKE_AZBATCH_*` variables hide a value that a Snakemake profile sets.

Snakemake parses its command line with ConfigArgParse, where a command-line flag beats an environment variable,
which beats a profile key (profiles are its config files); the plugin receives only the resulting values. To
tell the user that, say, a variable left over from `azbatch-local serve` overrides the profile, the command line
is parsed again by Snakemake's own parser once without the plugin's variables, and the profile keys that then
apply are compared with the variables that are set."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Mapping, Sequence

from .executor_settings import ENV_PREFIX


def snakemake_cli_argv() -> list[str] | None:
    """The arguments of the running `snakemake` command, or None when Snakemake runs through its Python API."""
    program = sys.argv[0] if sys.argv else ""
    if os.path.basename(program) == "snakemake" or program.endswith(os.path.join("snakemake", "__main__.py")):
        return sys.argv[1:]
    return None


def overridden_profile_keys(argv: Sequence[str], environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(variable, profile key, profile file) for every plugin variable set in `environ` whose setting a profile
    also sets while the command line does not."""
    ours = {name for name, value in environ.items() if name.startswith(ENV_PREFIX) and value}
    if not ours:
        return []
    from snakemake.cli import parse_args

    argv = list(argv)
    if "--" in argv:  # Snakemake parses what follows '--' as targets, apart from the options
        argv = argv[: argv.index("--")]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        parser, _ = parse_args(argv)  # the parser that reads the same profiles as this run
        parser.parse_known_args(argv, env_vars={k: v for k, v in environ.items() if k not in ours})
    found = []
    for source, entries in parser.get_source_to_settings_dict().items():
        if not source.startswith("config_file|"):
            continue
        for key, (action, _value) in entries.items():
            variable = getattr(action, "env_var", None)
            if variable in ours:
                found.append((variable, key, source.split("|", 1)[1]))
    return sorted(found)


def override_warnings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> list[str]:
    """One warning line per overridden profile key; none when that cannot be told (API use, a parse problem)."""
    if argv is None:
        return []
    try:
        overrides = overridden_profile_keys(argv, environ)
    except (Exception, SystemExit):  # Snakemake already parsed this command line; never fail the run here
        return []
    return [
        f"azbatch: environment variable {variable} overrides '{key}' from the profile {path} (a variable beats a "
        f"profile key); unset it to use the profile's value"
        for variable, key, path in overrides
    ]
