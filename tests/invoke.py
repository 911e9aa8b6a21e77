"""Running `cpfd` commands in-process from tests, as a user would type them."""

from __future__ import annotations

from click.testing import CliRunner, Result

from cpfd.cli import cpfd


def run(*args) -> Result:
    """`cpfd ARGS...` (paths and numbers stringified); the result whatever its exit status."""
    return CliRunner().invoke(cpfd, [str(a) for a in args])


def ok(*args) -> Result:
    """`cpfd ARGS...`, which must succeed."""
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def refused(*args, message: str) -> Result:
    """A user mistake: exit status 1 and one `error: ...` line naming the problem."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output
    return result
