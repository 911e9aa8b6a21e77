"""Running `cpfd` commands in-process from tests, as a user would type them, and checking refusals.

`FAST` are the training flags every test that trains uses (one epoch of a tiny model); `MODEL` the
same without the epochs. `refused` checks a command's refusal, `raises_one_line` a library call's.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from cpfd.cli import cpfd
from cpfd.storage.errors import CpfdError

MODEL = ["--batch-size", "16", "--hidden-size", "32", "--num-layers", "1", "--quiet"]
FAST = ["--epochs", "1", *MODEL]


def run(*args) -> Result:
    """`cpfd ARGS...` (paths and numbers stringified); the result whatever its exit status."""
    return CliRunner().invoke(cpfd, [str(a) for a in args])


def ok(*args) -> Result:
    """`cpfd ARGS...`, which must succeed."""
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_error_line(stderr: str) -> str:
    """stderr of a refused command: `warning:` lines at most, then exactly one `error:` line, last."""
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), stderr
    return lines[-1]


def refused(*args, message: str) -> Result:
    """A user mistake: exit status 1, and on stderr exactly one line `error: ...` naming the problem
    (no traceback; `warning:` lines may come before it); stdout may hold what the command printed
    before it stopped."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and message in one_error_line(result.stderr), result.output
    return result


def raises_one_line(call, message: str, error=CpfdError) -> Exception:
    """A library call refusing: `error` (CpfdError by default) with a one-line message matching `message`."""
    with pytest.raises(error, match=message) as info:
        call()
    assert "\n" not in str(info.value), str(info.value)
    return info.value


def assert_one_line_error(call, *fragments: str) -> str:
    """A library call refusing with a one-line CpfdError whose message holds every fragment; the message."""
    with pytest.raises(CpfdError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message
