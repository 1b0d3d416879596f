"""The command line every service shares: ``<service> serve [flags]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from trillium.servicekit.logs import configure_logging
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime, serve_until_signal
from trillium.servicekit.settings import ServiceSettings

DefinitionFactory = Callable[[ServiceSettings], ServiceDefinition]


def build_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the gRPC server until SIGTERM",
        description="Run the gRPC server until SIGTERM, then drain and stop.",
    )
    ServiceSettings.add_arguments(serve)
    return parser, commands


def run_serve(args: argparse.Namespace, name: str, make_definition: DefinitionFactory) -> int:
    try:
        settings = ServiceSettings.from_args(args)
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(name, settings.log_level, settings.log_format)
    runtime = ServiceRuntime(make_definition(settings), settings)
    return asyncio.run(serve_until_signal(runtime))


def service_main(
    name: str,
    description: str,
    make_definition: DefinitionFactory,
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point body for ``trillium-<name>``: parses flags and runs the chosen command."""
    parser, _ = build_parser(f"trillium-{name}", description)
    args = parser.parse_args(argv)
    return run_serve(args, name, make_definition)
