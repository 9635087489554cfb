"""The `cityguard` command: one subcommand per stage, `up` to run them all, and the operator tools.

Each area registers its own subcommands (see COMMAND_MODULES); a handler takes the parsed arguments and the
validated configuration and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import linecache
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cityguard.arguments import ERROR_PREFIX
from infra.assets import AssetError, UnknownAssetError
from infra.redaction import configure_logging, redacted
from schemas.settings.config import DEFAULT_CONFIG, ConfigError, load_config

# Modules with a `register(commands, add_command)` function, in the order their commands are listed.
COMMAND_MODULES = ["cityguard.commands_pipeline", "cityguard.commands_bench", "cityguard.commands_model",
                   "cityguard.commands_alerts", "cityguard.commands_eval", "cityguard.commands_cameras",
                   "cityguard.commands_crowd", "cityguard.commands_dataset", "cityguard.commands_ignore",
                   "cityguard.commands_console"]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cityguard", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", type=str.upper, default=os.environ.get("CITYGUARD_LOG_LEVEL", "INFO").upper(),
                        choices=LOG_LEVELS)
    parser.add_argument("--debug", action="store_true", default=os.environ.get("CITYGUARD_DEBUG") == "1",
                        help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(subparsers, name: str, help_text: str, handler, needs_config: bool = True):
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if needs_config:
            sub.add_argument("--config", type=Path,
                             default=Path(os.environ.get("CITYGUARD_CONFIG", DEFAULT_CONFIG)),
                             help="site configuration YAML (default: %(default)s)")
        sub.set_defaults(handler=handler, needs_config=needs_config, command_parser=sub)
        return sub

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, add_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command they were given to, whose --help lists what it takes
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not hasattr(args, "handler"):
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
    if args.log_level not in LOG_LEVELS:  # argparse checks a given value against its choices, not the default
        parser.error(f"CITYGUARD_LOG_LEVEL: invalid choice: {args.log_level!r} (choose from {', '.join(LOG_LEVELS)})")
    configure_logging(args.log_level, LOG_FORMAT)
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config_path = args.config if args.needs_config else None
    return run_reporting_errors(lambda: args.handler(args, load_config(config_path) if config_path else None),
                                debug=args.debug)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (with where to find the usage) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """A multi-line message on one line: its lines joined by "; ", a line ending in ":" by a space (it introduces
    the next)."""
    text = ""
    for line in (line.strip() for line in message.splitlines()):
        if line:
            text += (" " if text.endswith(":") else "; ") + line if text else line
    return text


# The project's own packages: an error one of them raises on purpose says what was wrong in its own words.
OWN_PACKAGES = frozenset({"cityguard", "schemas", "processors", "producers", "sinks", "infra"})


def raised_here(exc: BaseException) -> bool:
    """Whether a `raise` statement of the project's own code raised `exc`, a ValueError or RuntimeError, to say what
    went wrong. Anything else keeps its name and the --debug hint: a library's error, or one from a built-in called
    in our code (`int()`, unpacking), whose message alone may not say what it is about."""
    if (not isinstance(exc, ValueError | RuntimeError) or isinstance(exc, RecursionError | NotImplementedError)
            or exc.__traceback__ is None):
        return False
    frame = exc.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    code = frame.tb_frame.f_code
    return (frame.tb_frame.f_globals.get("__name__", "").split(".")[0] in OWN_PACKAGES
            and linecache.getline(code.co_filename, frame.tb_lineno, frame.tb_frame.f_globals).lstrip()
            .startswith("raise "))


def run_reporting_errors(command: Callable[[], int | None], debug: bool) -> int:
    """Runs a command; a failure becomes one line `cityguard: error: ...` on stderr and an exit status: 2 for what the
    user gave (configuration, paths, values, asset names), 1 for failures while running. --debug re-raises instead."""
    usage_errors = (ConfigError, UnknownAssetError, FileNotFoundError, FileExistsError, NotADirectoryError,
                    IsADirectoryError, ValueError)
    self_explaining = (ConfigError, AssetError, OSError)  # messages that need no exception name
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # SystemExit("reason") from a stage; numeric exit codes pass through
        if debug or not isinstance(exc.code, str):
            raise
        print(f"{ERROR_PREFIX}{redacted(exc.code)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        text = one_line(str(exc))
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            text = f"{exc.strerror}: {exc.filename}"
        elif type(exc).__module__.split(".")[0] in ("kafka", "aiokafka"):
            text = (f"Kafka: {text.removeprefix(type(exc).__name__ + ': ') or type(exc).__name__} (is the broker "
                    "in broker.bootstrap_servers or KAFKA_BOOTSTRAP_SERVERS running?)")
        elif not (isinstance(exc, self_explaining) or raised_here(exc)) or not text:
            text = f"{type(exc).__name__}: {text} (--debug shows the traceback)" if text else type(exc).__name__
        print(f"{ERROR_PREFIX}{redacted(text)}", file=sys.stderr)  # exception texts can quote URLs
        return 2 if isinstance(exc, usage_errors) else 1
