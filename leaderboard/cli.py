"""The ``leaderboard`` command: parses arguments and hands off to the module that does the work."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from leaderboard import logs, settings
from leaderboard.boards import BoardsError
from leaderboard.errors import UserError


class Command(Protocol):
    """What a subcommand module provides."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, config: settings.Settings, args: argparse.Namespace) -> int: ...


COMMANDS: dict[str, str] = {
    "consume": "consumers.runner",
    "api": "query_api.server",
    "simulate": "producers.simulate",
    "rebuild": "consumers.rebuild",
    "verify": "consumers.verify",
    "close-period": "consumers.close_period",
    "dlq": "consumers.dlq_tool",
    "migrate": "consumers.migrate",
    "archive": "consumers.archive",
    "demo": "leaderboard.demo",
}


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
        return _module(args.command).run(config, args)
    except (settings.SettingsError, BoardsError, UserError) as exc:
        print(f"leaderboard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
