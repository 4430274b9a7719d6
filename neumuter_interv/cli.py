"""The ``neumuter`` command line. Each subcommand lives in the module that owns its work and
registers itself through ``register(subparsers)``; this file only dispatches and turns
``NeuMuterError`` into one clear line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import sys

from transformers.utils import logging as transformers_logging

from .errors import NeuMuterError
from .metrics import progress_bars

# modules that define ``register(subparsers)``; each sets ``func`` on its parser
COMMAND_MODULES = [
    "neumuter_interv.commands.unlearn",
    "neumuter_interv.commands.demo",
    "neumuter_interv.commands.eval",
    "neumuter_interv.commands.export",
    "neumuter_interv.commands.compare",
    "neumuter_interv.commands.scan",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse with the refusals of the rest of the CLI: one line and exit code 2, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """A message on one line: a newline in a path or a value is shown escaped."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="neumuter", description="NeuMuter unlearning as pyvene interventions")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: a command may relaunch itself
    transformers_logging.disable_progress_bar()  # our own progress bars only: errors stay one line
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a log file
    try:
        with progress_bars(not getattr(args, "no_progress", False)):
            return int(args.func(args) or 0)
    except NeuMuterError as error:
        print(f"neumuter {args.command}: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neumuter {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


def console_main() -> int:
    """The ``neumuter`` program: ``main`` in a process of its own, whose allocator it may tune."""
    reuse_freed_memory()
    return main()


def reuse_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel (process-wide, so
    done by the ``neumuter`` program only, never by a library call that some other process makes).

    Every localization step allocates and frees tensors of tens of megabytes (the joint logits, their
    log-softmax, their gradients). With glibc's adaptive defaults many of them go back to the kernel and
    are faulted in again, page by page, at the next step: a sixth of a step's time on the testbed.
    A fixed mmap threshold at glibc's maximum (32 MiB) and a heap trimmed only above 1 GiB of free top
    keep those pages mapped. Only where memory comes from changes, never a number; the process keeps
    its peak heap. Does nothing where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


if __name__ == "__main__":
    sys.exit(console_main())
