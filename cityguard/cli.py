"""The `cityguard` command: one subcommand per stage, `up` to run them all, and the operator tools.

Each area registers its own subcommands (see COMMAND_MODULES); a handler takes the parsed arguments and the
validated configuration and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from schemas.settings.config import DEFAULT_CONFIG, ConfigError, load_config

# Modules with a `register(commands, add_command)` function, in the order their commands are listed.
COMMAND_MODULES = ["cityguard.commands_pipeline", "cityguard.commands_bench", "cityguard.commands_model",
                   "cityguard.commands_alerts", "cityguard.commands_eval", "cityguard.commands_cameras",
                   "cityguard.commands_crowd", "cityguard.commands_dataset", "cityguard.commands_ignore"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cityguard", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("CITYGUARD_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(subparsers, name: str, help_text: str, handler, needs_config: bool = True):
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if needs_config:
            sub.add_argument("--config", type=Path,
                             default=Path(os.environ.get("CITYGUARD_CONFIG", DEFAULT_CONFIG)),
                             help="site configuration YAML (default: %(default)s)")
        sub.set_defaults(handler=handler, needs_config=needs_config)
        return sub

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, add_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = None
    if args.needs_config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"cityguard: {exc}", file=sys.stderr)
            return 2
    return int(args.handler(args, config) or 0)
