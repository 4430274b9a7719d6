"""The ``neumuter`` command line. Each subcommand lives in the module that owns its work and
registers itself through ``register(subparsers)``; this file only dispatches and turns
``NeuMuterError`` into one clear line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from transformers.utils import logging as transformers_logging

from .errors import NeuMuterError

# modules that define ``register(subparsers)``; each sets ``func`` on its parser
COMMAND_MODULES = [
    "neumuter_interv.commands.unlearn",
    "neumuter_interv.commands.demo",
    "neumuter_interv.commands.eval",
    "neumuter_interv.commands.export",
    "neumuter_interv.commands.compare",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neumuter", description="NeuMuter unlearning as pyvene interventions")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    transformers_logging.disable_progress_bar()  # our own progress bars only: errors stay one line
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a log file
    try:
        return int(args.func(args) or 0)
    except NeuMuterError as error:
        print(f"neumuter {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neumuter {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
