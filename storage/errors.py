"""The one exception type the library raises for mistakes a user can fix, and its warning.

Library code raises `CpfdError` with a message that names the file, row or option and what is
wrong; `cli.py` (and `experiment.launch` in a torchrun job's processes) turns it into a single
`error: ...` line (`error_line`) and exit status 1. A problem that does
not stop the work (a split with one class, a run of a handful of steps, a teacher whose losses
carry no information) is `warnings.warn(CpfdWarning(...))`: one `warning: ...` line on stderr.
"""

import sys
import warnings
from contextlib import contextmanager
from typing import Iterator


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


def error_line(error: BaseException) -> str:
    """The one line a command ends with for a CpfdError or an OSError (`file: reason`).

    An error raised in a DataLoader worker comes back with the worker's traceback in its message
    ("Caught CpfdError in DataLoader worker process 0. Original Traceback ..."): the original
    message, the traceback's last line, is kept."""
    if isinstance(error, CpfdError) or not isinstance(error, OSError):
        message = str(error)
    else:
        message = f"{getattr(error, 'filename', '') or ''}: {error.strerror or error}".lstrip(": ")
    if "Original Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        message = last.split("Error: ", 1)[1] if "Error: " in last else last
    return " ".join(message.split())


@contextmanager
def warnings_as_lines(speak: bool = True) -> Iterator[None]:
    """Inside: each CpfdWarning is one `warning: ...` line on stderr, every time it is raised (or
    none at all, `speak=False`: a torchrun job's processes other than rank 0); other warnings keep
    Python's format."""
    python_showwarning = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CpfdWarning):
            print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
        else:
            python_showwarning(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        warnings.simplefilter("always" if speak else "ignore", CpfdWarning)
        yield
