"""Docs are code: every command and option is documented, and the README's Python example runs."""

import re
from pathlib import Path

import click
import pytest

from cpfd.cli import cpfd

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
COMMANDS_MD = (REPO / "docs" / "commands.md").read_text()


def command_sections() -> dict[str, str]:
    """docs/commands.md cut at its `## \\`cpfd NAME\\`` headings: {name: section text}."""
    parts = re.split(r"^## `cpfd ([a-z-]+)`\s*$", COMMANDS_MD, flags=re.MULTILINE)
    return {name: text for name, text in zip(parts[1::2], parts[2::2])}


def long_options(command: click.Command) -> list[str]:
    return [flag for p in command.params if isinstance(p, click.Option)
            for flag in p.opts + p.secondary_opts if flag.startswith("--")]


@pytest.mark.parametrize("name", sorted(cpfd.commands))
def test_every_command_and_long_option_is_in_commands_md(name):
    sections = command_sections()
    assert name in sections, f"docs/commands.md has no '## `cpfd {name}`' section"
    missing = [flag for flag in long_options(cpfd.commands[name])
               if not re.search(rf"`{re.escape(flag)}`", sections[name])]
    assert not missing, f"docs/commands.md, cpfd {name}: options not documented: {missing}"


def test_commands_md_documents_no_command_that_does_not_exist():
    assert set(command_sections()) <= set(cpfd.commands)


@pytest.mark.parametrize("name", sorted(cpfd.commands))
def test_every_command_is_in_the_readme(name):
    assert re.search(rf"\bcpfd {re.escape(name)}\b", README), f"README.md never shows `cpfd {name}`"


def test_every_doc_is_linked_from_the_readme():
    unlinked = [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in README]
    assert not unlinked, f"README.md does not link {unlinked}"


def python_api_snippet() -> str:
    section = README.split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, f"expected one ```python block under '## Python API', found {len(blocks)}"
    return blocks[0]


def test_the_readme_python_api_snippet_runs(capsys):
    code = python_api_snippet()
    exec(compile(code, "README.md (Python API)", "exec"), {"__name__": "readme_snippet"})
    printed = [line.strip() for line in capsys.readouterr().out.splitlines()]
    # The snippet shows what it prints in comments: keep the two in step.
    shown = [line.split("# ", 1)[1].strip() for line in code.splitlines()
             if line.lstrip().startswith("# [") or line.lstrip().startswith("# {") or
             re.search(r"\)\s+# [\[{]", line)]
    assert printed == shown, f"the snippet prints {printed}, its comments say {shown}"
