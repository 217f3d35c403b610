"""The `azbatch-local` command line: its parser (service options, node options, the node-image and snakemake-image
commands) and the `ServiceConfig` it yields (`config_from_args`); cli.py runs what it asks for."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, NoReturn

from . import pool_file
from .service_config import AppPackageSpec, CliOption, ConfigError, PoolSpec, ServiceConfig, default_pools
from .nodes import node_image as node_image_module
from .nodes import snakemake_image

PROG = "azbatch-local"
EXIT_USAGE = 2
DEFAULT_ROOT = Path(".azbatch-local")
ACCOUNT_KEY_ENV = "AZBATCH_LOCAL_ACCOUNT_KEY"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (argparse's default adds the whole usage text)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    _add_account_options(parser)
    _add_config_options(parser)
    _add_outage_option(parser)
    _add_security_options(parser)
    _add_node_options(parser)


def config_options() -> list[tuple[str, CliOption, object]]:
    """(field name, its option, its default) of every `ServiceConfig` field an option sets, in field order."""
    return [(f.name, f.metadata["option"], f.default) for f in fields(ServiceConfig) if "option" in f.metadata]


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse's own message for int/float/Path; a parser's one-line ValueError message for the others."""
    if parse in (int, float, Path):
        return parse

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """The options generated from `ServiceConfig`'s field metadata: flag, help and the field's default."""
    for name, spec, default in config_options():
        settings: dict[str, Any] = {"dest": name, "default": default, "help": spec.help}
        if isinstance(default, bool):
            settings["action"] = argparse.BooleanOptionalAction if spec.negatable else "store_true"
        elif spec.choices is not None:
            settings["choices"] = spec.choices
        else:
            settings["type"] = _argument_type(spec.parse or str)
        if spec.metavar is not None:
            settings["metavar"] = spec.metavar
        parser.add_argument(spec.flag, **settings)


def _add_account_options(parser: argparse.ArgumentParser) -> None:
    """Where the service listens and keeps its files, its pools, application packages and account."""
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="ID[:NODES[:SLOTS]]",
        help="a pool of simulated nodes (repeatable; default: one pool 'local' sized to this machine's cores)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"directory for Azurite data, node directories, env.sh and metrics.json (default: ./{DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--app-package",
        action="append",
        default=[],
        metavar="NAME:VERSION=ZIP",
        help="an application package the nodes can install (repeatable)",
    )
    parser.add_argument("--account-name", default=None, help="Batch account name (default: the dev account)")
    parser.add_argument(
        "--account-key",
        default=os.environ.get(ACCOUNT_KEY_ENV),
        help=f"Batch account key, base64 (default: ${ACCOUNT_KEY_ENV}, else the documented dev key); "
        f"prefer the variable to keep a real key off the command line",
    )


def _add_outage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--outage", action="append", default=[], metavar="KIND:SECONDS[@AFTER]",
        help="the Batch API (batch), storage (storage) or storage as the nodes reach it (nodeStorage) unreachable "
        "for SECONDS, AFTER seconds after the start (repeatable); POST /_local/outage switches one on at any time",
    )


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    """TLS and Microsoft Entra ID."""
    parser.add_argument(
        "--https", action="store_true", help="serve the Batch API and storage over TLS (a generated CA, ROOT/ca.pem)"
    )
    parser.add_argument(
        "--entra",
        action="store_true",
        help="Microsoft Entra ID: a local token authority with a service principal and a managed identity; bearer "
        "tokens accepted next to Shared Key; exports the service principal instead of keys (implies --https)",
    )
    parser.add_argument(
        "--token-lifetime", type=int, default=None, metavar="SECONDS",
        help="lifetime of the tokens the authority issues (default: 3600); short ones rehearse token refresh",
    )


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    """Pools beyond --pool (containers, start tasks, a pool file) and what the nodes run in."""
    parser.add_argument(
        "--container-pool",
        action="append",
        default=[],
        metavar="ID[:NODES[:SLOTS]]",
        help="a container-enabled pool (containerConfiguration dockerCompatible): tasks need containerSettings and "
        "run in podman (repeatable)",
    )
    parser.add_argument(
        "--pool-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="pools from a JSON or YAML file: id, nodes, slots, vmSize, containerConfiguration, startTask",
    )
    parser.add_argument(
        "--start-task",
        action="append",
        default=[],
        metavar="POOL=COMMAND",
        help="a start task for POOL's nodes (waitForSuccess, non-admin; the pool file gives every property)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description="Local Azure Batch-compatible service with Azurite, on loopback.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    serve = commands.add_parser("serve", help="start the service and print the export lines; Ctrl-C stops it")
    _add_service_options(serve)
    run = commands.add_parser(
        "run",
        help="start the service, run COMMAND with its settings, then stop",
        description="Start the service, run COMMAND with the exported settings in its environment, stop everything "
        "when it exits and exit with its status. COMMAND runs in its own process group: SIGINT/SIGTERM (and "
        "Ctrl-C) reach it once, forwarded by azbatch-local; a second signal kills it. It should not read the "
        "terminal.",
    )
    _add_service_options(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the command to run")
    _add_node_image_commands(commands)
    snakemake_image.add_command(commands, _OneLineParser, DEFAULT_ROOT)
    return parser


def _add_node_image_commands(commands: argparse._SubParsersAction) -> None:
    node_image = commands.add_parser("node-image", help="the stock node image local nodes can run in")
    actions = node_image.add_subparsers(dest="action", required=True, parser_class=_OneLineParser)
    build = actions.add_parser(
        "build",
        help="build the stock node image (cached: instant when DIR already holds it)",
        description="Build a root filesystem like a stock Azure Batch Linux node: Debian "
        f"{node_image_module.SUITE} minbase from Debian's mirror with {', '.join(node_image_module.PACKAGES)}, "
        "the non-admin task user _azbatch, and no pip, venv or Snakemake. Needs root and the Debian package "
        "debootstrap. A second build of the same recipe returns at once.",
    )
    build.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=node_image_module.default_directory(DEFAULT_ROOT),
        help=f"image directory (default: ./{node_image_module.default_directory(DEFAULT_ROOT)})",
    )
    build.add_argument(
        "--mirror",
        default=node_image_module.DEFAULT_MIRROR,
        help=f"Debian mirror URL (default: {node_image_module.DEFAULT_MIRROR})",
    )
    build.add_argument(
        "--podman",
        action="store_true",
        help="also import the image into a local podman store as a container image (no registry involved)",
    )
    build.add_argument(
        "--podman-store",
        type=Path,
        default=None,
        help="podman store for --podman (default: a 'podman' directory next to DIR)",
    )


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """ServiceConfig from parsed options; ConfigError (one line) on bad values."""
    from .http.outage_switch import ScheduledOutage

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: choose 0 (any free port) or a port between 1 and 65535")
    overrides: dict[str, object] = {}
    pools = _pools_from_args(args)
    if pools:
        overrides["pools"] = pools
    if args.account_name is not None:
        if not args.account_name.isalnum():
            raise ConfigError(f"--account-name {args.account_name!r}: use letters and digits only")
        overrides["account_name"] = args.account_name
    if args.account_key is not None:
        import base64
        import binascii

        try:
            base64.b64decode(args.account_key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("--account-key: not valid base64; pass a base64-encoded key") from None
        overrides["account_key"] = args.account_key
    if args.token_lifetime is not None and not args.entra:
        raise ConfigError("--token-lifetime: only meaningful with --entra; add --entra")
    if args.entra:
        from .auth.token_authority import DEFAULT_TOKEN_LIFETIME, EntraConfig

        overrides["entra"] = EntraConfig(
            token_lifetime=DEFAULT_TOKEN_LIFETIME if args.token_lifetime is None else args.token_lifetime
        )
    config = ServiceConfig(
        root=args.root,
        app_packages=[AppPackageSpec.parse(text) for text in args.app_package],
        https=args.https or args.entra,
        outages=tuple(ScheduledOutage.parse(text) for text in args.outage),
        **{name: getattr(args, name) for name, _, _ in config_options()},
        **overrides,  # type: ignore[arg-type]
    )
    config.validate()
    return config


def _pools_from_args(args: argparse.Namespace) -> list[PoolSpec]:
    """--pool, --container-pool and --pool-file pools in that order, then --start-task applied to them."""
    pools = [PoolSpec.parse(text) for text in args.pool]
    pools += [pool_file.container_pool(text) for text in args.container_pool]
    if args.pool_file is not None:
        pools += pool_file.load_pool_file(args.pool_file)
    if args.start_task and not pools:
        pools = default_pools()
    for text in args.start_task:
        pools = pool_file.with_start_task(pools, text)
    return pools
