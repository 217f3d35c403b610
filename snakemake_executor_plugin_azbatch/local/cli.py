"""`azbatch-local`: run the local Batch service (with Azurite) on loopback.

    azbatch-local serve [options]           start, print the `export` lines, run until Ctrl-C / SIGTERM
    azbatch-local run [options] -- CMD ...  start, run CMD with the settings in its environment, stop when it exits;
                                            exits with CMD's status
    azbatch-local node-image build [DIR]    build (or reuse) the stock node image: Debian minimal with python3, no
                                            pip/venv/Snakemake; --podman also imports it as a local podman image
    azbatch-local snakemake-image build     build (or reuse) that image plus Snakemake as a podman image for
                                            container pools; prints its reference

Everything lives under --root (default ./.azbatch-local): Azurite's data, the nodes' directories, env.sh (the
export lines) and metrics.json (written at shutdown).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType

from .cli_options import EXIT_USAGE, PROG, build_parser, config_from_args
from .service_config import (
    ConfigError,
    ServiceConfig,
)
from .nodes import node_image as node_image_module
from .nodes import snakemake_image
from .service import LocalService
from .storage.azurite import AzuriteError

EXIT_START_FAILED = 1
EXIT_COMMAND_NOT_FOUND = 127
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal went away


class _StopRequested(BaseException):
    """Raised from the signal handler so a signal during start-up unwinds through LocalService.start()."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "node-image":
        return _node_image_build(args)
    if args.command == "snakemake-image":
        return snakemake_image.run_command(args, PROG)
    command: list[str] = []
    if args.command == "run":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not command:
            parser.error("run: give the command to run after --, e.g. azbatch-local run -- snakemake ...")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        return _serve(config)
    return _run(config, command)


def _node_image_build(args: argparse.Namespace) -> int:
    from .nodes.containers import PodmanEngine
    from .nodes.containers import missing_packages as podman_missing

    prog = f"{PROG} node-image build"

    def say(line: str) -> None:
        print(f"{prog}: {line}", file=sys.stderr)

    try:
        image = node_image_module.build(args.dir, node_image_module.Recipe(mirror=args.mirror), log=say)
        print(image.directory)
        if args.podman:
            missing = podman_missing()
            if missing:
                raise node_image_module.NodeImageError(
                    f"--podman needs {', '.join(missing)}: install the Debian package(s)"
                )
            engine = PodmanEngine(args.podman_store or image.directory.parent / "podman")
            reference = node_image_module.import_into_podman(image, engine)
            say(f"podman image {reference} in store {engine.store}")
            print(reference)
    except node_image_module.NodeImageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    return 0


def _start(config: ServiceConfig, command_name: str) -> LocalService | int:
    """Started service, or the exit status when it could not start (after stopping what did)."""
    service = LocalService(config)
    try:
        service.start()
    except ConfigError as exc:
        print(f"{PROG} {command_name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _StopRequested:
        return 128 + signal.SIGTERM
    except (AzuriteError, OSError) as exc:
        print(f"{PROG} {command_name}: could not start the service: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    for line in service.notices():
        print(f"{PROG} {command_name}: {line}", file=sys.stderr)
    return service


def _stop(service: LocalService) -> None:
    # Signals during shutdown must not interrupt the cleanup itself.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    service.stop()


def _serve(config: ServiceConfig) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not started.is_set():
            raise _StopRequested()
        stop.set()

    started = threading.Event()
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    service = _start(config, "serve")
    if isinstance(service, int):
        return service
    started.set()
    try:
        for line in service.export_lines():
            print(line)
        print(f"# written to {service.env_file}; `source` it in another shell. Ctrl-C or SIGTERM stops the service.")
        storage = service.endpoints.storage if service.endpoints else None
        print(f"# Batch API {service.account_url}  storage {storage.blob_url if storage else ''}")
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
    finally:
        _stop(service)
    return 0


def _run(config: ServiceConfig, command: list[str]) -> int:
    child: subprocess.Popen[bytes] | None = None
    starting = True  # until the service is up, a signal aborts the start-up
    signals_seen = 0

    def forward(signum: int) -> None:
        assert child is not None
        # The command runs in its own process group (so a terminal Ctrl-C reaches it exactly once, via us):
        # forward the first signal, escalate to SIGKILL on the next.
        try:
            os.killpg(child.pid, signum if signals_seen == 1 else signal.SIGKILL)
        except ProcessLookupError:
            pass

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals_seen
        if starting:
            raise _StopRequested()
        signals_seen += 1
        if child is not None:
            forward(signum)
        else:
            pending.append(signum)  # arrived while the command was being launched

    pending: list[int] = []
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    service = _start(config, "run")
    if isinstance(service, int):
        return service
    starting = False
    try:
        print(
            f"{PROG}: Batch API at {service.account_url}; settings in {service.env_file}; running {command[0]}",
            file=sys.stderr,
        )
        if pending:
            return 128 + pending[0]
        try:
            child = subprocess.Popen(command, env={**os.environ, **service.env()}, process_group=0)
        except OSError as exc:
            print(f"{PROG} run: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_COMMAND_NOT_FOUND
        if pending:
            forward(pending[0])
        status = child.wait()
        return 128 - status if status < 0 else status
    finally:
        _stop(service)


if __name__ == "__main__":
    sys.exit(main())
