"""The one exception for a command line that cannot be carried out as given.

A command raises :class:`UsageError` for input it refuses before any work starts (an unknown
name, flags that clash, a folder that is not what the command reads); ``python -m suite``
catches it in one place and prints ``error: <message>`` with exit status 2, the status argparse
gives its own usage errors. The message names what was wrong and what is accepted.
"""

from __future__ import annotations

__all__ = ["UsageError", "USAGE_EXIT"]

USAGE_EXIT = 2
"""The exit status of a usage error (argparse's)."""


class UsageError(ValueError):
    """Input a command refuses: the message says what was wrong and what is accepted."""
