"""The one exception type the library raises for mistakes a user can fix.

Library code raises `CpfdError` with a message that names the file, row or option and what is
wrong; `cli.py` turns it into a single `error: ...` line and exit status 1.
"""


class CpfdError(Exception):
    """A user-facing error: bad input, a wrong path, a dump that does not match its corpus."""
