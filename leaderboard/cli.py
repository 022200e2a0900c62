"""The ``leaderboard`` command: parses arguments and hands off to the module that does the work.

Before a command runs, its configuration is validated and the services it needs are checked (bounded);
whatever fails, here or later, ends as ONE line on stderr (secrets masked) and an exit code from
:mod:`leaderboard.errors`: 2 configuration or usage, 3 a service is unreachable, 4 unexpected.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Protocol

from leaderboard import boards, errors, logs, probe, settings
from leaderboard.probe import Service


class Command(Protocol):
    """What a subcommand module provides."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, config: settings.Settings, args: argparse.Namespace) -> int: ...


COMMANDS: dict[str, str] = {
    "consume": "consumers.runner",
    "api": "leaderboard.service",
    "simulate": "producers.simulate",
    "rebuild": "consumers.rebuild",
    "verify": "consumers.verify",
    "close-period": "consumers.close_period",
    "dlq": "consumers.dlq_tool",
    "migrate": "consumers.migrate",
    "archive": "consumers.archive",
    "demo": "leaderboard.demo",
    "moderate": "leaderboard.moderation.cli",
    "boards": "consumers.boards_tool",
}


BOARD_COMMANDS = frozenset(
    {"consume", "api", "rebuild", "verify", "close-period", "demo", "archive", "boards"}
)
"""Commands that read LEADERBOARD_BOARDS_FILE: it is validated before they start."""


def needs(command: str, args: argparse.Namespace, config: settings.Settings) -> set[Service]:
    """The services ``command`` cannot start without; each is checked (bounded) before it runs."""
    all_three = {Service.KAFKA, Service.REDIS, Service.POSTGRES}
    sinks = {Service.REDIS, Service.POSTGRES}
    if command in ("consume", "demo"):
        return all_three
    if command == "api":
        return sinks | ({Service.KAFKA} if config.ingest_token else set())
    if command in ("simulate", "dlq"):
        return {Service.KAFKA}
    if command == "rebuild":
        return sinks | ({Service.KAFKA} if args.source == "kafka" else set())
    if command == "verify":
        return all_three  # the group's lag is part of the report
    if command == "close-period":
        return sinks if (args.list or args.dry_run) else all_three
    if command == "migrate":
        return {Service.POSTGRES}
    if command == "archive":
        return {Service.POSTGRES}
    if command == "moderate":
        return {Service.POSTGRES}  # durable in PostgreSQL first; Kafka publication can catch up later
    if command == "boards":
        # list, show and plan read PostgreSQL only; the others also build or switch Redis generations.
        return {Service.POSTGRES} if args.action in ("list", "show", "plan") else sinks
    raise AssertionError(f"needs() misses {command}")


def _module(name: str) -> Command:
    module: Command = importlib.import_module(COMMANDS[name])
    return module


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="leaderboard", description="Real-time gaming leaderboard.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in args_list if not a.startswith("-")), None)
    for name in COMMANDS:
        if name == wanted:
            module = _module(name)
            module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
        else:
            sub.add_parser(name, help=f"see: leaderboard {name} --help")
    args = parser.parse_args(args_list)
    try:
        config = settings.load()
        logs.setup(config.log_level)
        if args.command in BOARD_COMMANDS:
            boards.load(config.boards_file)
        probe.require(config, needs(args.command, args, config))
        return _module(args.command).run(config, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place every failure becomes one line
        return fail(args.command, exc)
    except:  # noqa: E722 - librdkafka can raise objects that are no BaseException (e.g. KafkaError)
        raised = sys.exc_info()[1]
        if isinstance(raised, BaseException):
            raise  # SystemExit and friends keep their meaning
        return fail(args.command, RuntimeError(f"{type(raised).__name__}: {raised}"))


def fail(command: str, exc: BaseException) -> int:
    """Print ``exc`` as one redacted line; return its exit code. DEBUG logging adds the traceback."""
    code, line = errors.explain(exc)
    if command == "demo" and code == errors.EXIT_UNAVAILABLE:
        line += " (the demo runs on the local stack: `make up` first)"
    secrets = settings.secrets_in()
    log = logging.getLogger(__name__)
    if code == errors.EXIT_INTERNAL and log.isEnabledFor(logging.DEBUG):
        trace = "".join(traceback.format_exception(exc))
        log.debug("unexpected error", extra={"traceback": errors.redact(trace, secrets)})
    print(f"leaderboard {command}: {errors.redact(errors.one_line(line, 1000), secrets)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
