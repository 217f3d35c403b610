"""Runs inside the Azure CLI's own environment (`make azcli`, .venv-azcli/), not the project's: checks command
lines against the CLI's real command table and argument parser, without running them (nothing is sent).

Input on stdin, JSON: [{"args": ["batch", "pool", "show", ...], "mention": false}, ...]
    mention false: a command line as written in the docs; it must parse exactly as `az` would parse it.
    mention true:  a command named in prose (`az batch account login`); it must parse too, except that it may
                   leave out required arguments or values: then the command or group must exist and every flag
                   it shows must be one of the command's flags.
Output on stdout, JSON: [{"ok": bool, "error": str}, ...] in the same order.
"""

import contextlib
import io
import json
import sys

from knack.events import EVENT_INVOKER_CMD_TBL_LOADED, EVENT_INVOKER_POST_PARSE_ARGS


class Parsed(Exception):
    """Raised right after the CLI parsed a command line, so the command itself never runs."""


def run(args):
    """(exit code, command name, its option strings, stderr) of `az ARGS` stopped after parsing."""
    from azure.cli.core import get_default_cli

    cli = get_default_cli()
    seen = {"command": None, "options": None}

    def on_table_loaded(cli_ctx, **kwargs):
        command = cli_ctx.invocation.data.get("command_string")
        sub = kwargs["parser"].subparser_map.get(command)
        if command in kwargs["cmd_tbl"] and sub is not None:
            seen["command"] = command
            seen["options"] = {o for action in sub._actions for o in action.option_strings}

    def on_parsed(cli_ctx, **kwargs):
        raise Parsed()

    cli.register_event(EVENT_INVOKER_CMD_TBL_LOADED, on_table_loaded)
    cli.register_event(EVENT_INVOKER_POST_PARSE_ARGS, on_parsed)
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            cli.invocation = cli.invocation_cls(
                cli_ctx=cli, parser_cls=cli.parser_cls, commands_loader_cls=cli.commands_loader_cls,
                help_cls=cli.help_cls,
            )
            cli.invocation.execute(list(args))
        code = 0
    except Parsed:
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # a validator or the loader failing is an answer too
        code, err = 1, io.StringIO(f"{type(e).__name__}: {e}")
    return code, seen["command"], seen["options"], " ".join(err.getvalue().split())


def check(item):
    args = item["args"]
    code, _, _, err = run(args)
    if code == 0:
        return {"ok": True, "error": ""}
    # A command named in prose may leave out required arguments or values ("--command-line ..."); then the
    # command must exist and every flag shown must be one of its flags.
    if not item["mention"] or not any(s in err for s in ("required", "expected one argument")):
        return {"ok": False, "error": err}
    words = args[: next((i for i, a in enumerate(args) if a.startswith("-")), len(args))]
    code, command, options, err = run(words + ["--help"])
    if code != 0:
        return {"ok": False, "error": f"'az {' '.join(words)}' is neither a command nor a group: {err}"}
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    if flags and options is None:
        return {"ok": False, "error": f"'az {' '.join(words)}' is a group, not a command, yet has flags {flags}"}
    unknown = [f for f in flags if f not in options]
    return {"ok": not unknown, "error": f"unknown flags {unknown} for 'az {command}'" if unknown else ""}


if __name__ == "__main__":
    items = json.load(sys.stdin)
    json.dump([check(item) for item in items], sys.stdout)
