"""The one exception type that user-facing code raises for bad input, and ``run_script``, which gives the recipes the CLI's handling of it.

The CLI prints its message as a single line and exits non-zero; everything else is a bug and keeps
its traceback.
"""

import sys
from pathlib import Path


class NeuMuterError(ValueError):
    """Bad input or state that the user can fix: the message says what and how."""


def run_script(main) -> None:
    """Run a recipe's ``main`` the way the CLI runs a command: a ``NeuMuterError`` becomes one line on
    stderr naming the script, and exit code 2, instead of a traceback."""
    try:
        main()
    except NeuMuterError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)
