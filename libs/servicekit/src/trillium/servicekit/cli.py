"""The command line every service shares: ``<service> serve [flags]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from trillium.servicekit.logs import configure_logging
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime, serve_until_signal
from trillium.servicekit.settings import EnvSettings, ServiceSettings

DefinitionFactory = Callable[..., ServiceDefinition]


def build_parser(
    prog: str, description: str, extra_settings: type[EnvSettings] | None = None
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the gRPC server until SIGTERM",
        description="Run the gRPC server until SIGTERM, then drain and stop.",
    )
    ServiceSettings.add_arguments(serve)
    if extra_settings is not None:
        extra_settings.add_arguments(serve)
    return parser, commands


def run_serve(
    args: argparse.Namespace,
    name: str,
    make_definition: DefinitionFactory,
    extra_settings: type[EnvSettings] | None = None,
) -> int:
    """Parse the settings, build the definition (``make_definition(settings[, extra])``) and serve.

    A bad setting, or a definition that cannot be built (e.g. a corrupt model checkpoint), exits 2
    with the message on stderr before anything binds."""
    try:
        settings = ServiceSettings.from_args(args)
        extra = extra_settings.from_args(args) if extra_settings is not None else None
        configure_logging(name, settings.log_level, settings.log_format)
        definition = make_definition(settings) if extra is None else make_definition(settings, extra)
    except (ValueError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    runtime = ServiceRuntime(definition, settings)
    return asyncio.run(serve_until_signal(runtime))


Command = Callable[[list[str]], int]


def service_main(
    name: str,
    description: str,
    make_definition: DefinitionFactory,
    argv: Sequence[str] | None = None,
    commands: dict[str, tuple[str, Command]] | None = None,
    *,
    extra_settings: type[EnvSettings] | None = None,
) -> int:
    """Entry point body for ``trillium-<name>``: ``serve`` plus the service's own ``commands``.

    ``commands`` maps a sub-command name to ``(help, main)``; its arguments go to ``main`` untouched,
    so each command keeps its own parser and ``--help``.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    extra = commands or {}
    if arguments[:1] and arguments[0] in extra:
        return extra[arguments[0]][1](arguments[1:])
    parser, subcommands = build_parser(f"trillium-{name}", description, extra_settings)
    for command, (help_text, _) in extra.items():
        subcommands.add_parser(command, help=help_text, add_help=False)
    args = parser.parse_args(arguments)
    return run_serve(args, name, make_definition, extra_settings)
