"""The one exception type the library raises for mistakes a user can fix, and its warning.

Library code raises `CpfdError` with a message that names the file, row or option and what is
wrong; `cli.py` turns it into a single `error: ...` line and exit status 1. A problem that does
not stop the work (a split with one class, a run of a handful of steps, a teacher whose losses
carry no information) is `warnings.warn(CpfdWarning(...))`: one `warning: ...` line on stderr.
"""

import warnings


class CpfdError(Exception):
    """A user-facing error: bad input, a wrong path, a dump that does not match its corpus."""


class FailedOnMain(CpfdError):
    """Raised on the other ranks of a torchrun job when rank 0 failed at a step only it does (and
    says so itself): those ranks stop without repeating the message."""


class CpfdWarning(UserWarning):
    """Something a user should know about their data or run; the command goes on."""


def warn(message: str) -> None:
    """Say `message` as a CpfdWarning (one `warning:` line from the CLI)."""
    warnings.warn(CpfdWarning(message), stacklevel=2)
