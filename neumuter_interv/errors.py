"""The one exception type that user-facing code raises for bad input.

The CLI prints its message as a single line and exits non-zero; everything else is a bug and keeps
its traceback.
"""


class NeuMuterError(ValueError):
    """Bad input or state that the user can fix: the message says what and how."""
