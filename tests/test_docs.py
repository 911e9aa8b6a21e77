"""Docs are code: every command and option is documented, the README's Python example runs, and every
Python file and module the README and docs/*.md name exists (so a moved file cannot leave a stale path)."""

import ast
import importlib
import importlib.util
import os
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


# --- Paths and module names in the docs name things that exist ---------------------------------

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# A path whose first folder is one of these names another project's file (a virtual environment,
# an installed library, a project the docs compare with), not ours: it is not checked. Write such a
# file with its project's folder (`nanoGPT/train.py`, `optimum/exporters/onnx/convert.py`) and add
# that folder here; a bare `train.py` is read as ours.
OTHER_PROJECTS = {".venv", "venv", "site-packages", "optimum", "transformers", "torch", "nanoGPT", "torchtune"}

# `dir/file.py` or `file.py`, optionally followed by `:name` (a name defined in that file). Not a
# piece of a longer path or of a URL: nothing path-like right before it.
PY_PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.py)(?::([A-Za-z_]\w*))?(?![\w/])")

# `pipeline.stages.prepare_stage`, `cpfd.experiment.synth`, `cli.cpfd.commands`: a dotted name whose
# first part is one of the package's modules (after an optional `cpfd.`). `cpfd.fold` (a hash salt)
# and `experiment.json` (a file) are not module references.
PACKAGE_PARTS = ("cli", "pipeline", "student", "teacher", "storage", "experiment")
DOTTED = re.compile(r"(?<![\w./-])((?:cpfd\.)?(?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(PACKAGE_PARTS))
FILE_SUFFIXES = {"py", "md", "json", "jsonl", "parquet", "png", "csv", "txt", "lock", "tmp", "safetensors"}


def doc_lines(text: str):
    """(line number, line) of a doc's text, counted from 1."""
    return enumerate(text.splitlines(), start=1)


def our_python_files() -> dict[str, list[Path]]:
    """{file name: [paths]} of every .py file of this repository (hidden folders such as .venv, build
    output and run folders aside)."""
    found: dict[str, list[Path]] = {}
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and not d.endswith(".egg-info")
                               and d not in ("__pycache__", "runs", "build", "dist"))
        for name in sorted(names):
            if name.endswith(".py"):
                found.setdefault(name, []).append(Path(folder) / name)
    return found


def defines(path: Path, name: str) -> bool:
    """Whether a Python file defines `name` at its top level (def, class, assignment or import)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def stale_paths(text: str) -> list[str]:
    """What is wrong with each `something.py` a doc names, one line each ("LINE: PATH: problem").

    The rule: a path with a folder (`pipeline/train.py`, `tests/test_layout.py`, `benchmarks/maps.py`)
    is relative to the repository root and must be a file there, unless its first folder is in
    OTHER_PROJECTS (another project's file). A bare name is a file at the root when there is one
    (`cli.py`, `__init__.py`); otherwise it must be the name of exactly one .py file of the
    repository (`train_throughput.py`; hidden folders such as .venv and build output aside): none
    is stale, several is ambiguous (`train.py`: write `pipeline/train.py`). A `:name` after the
    path (`benchmarks/common.py:LoopClock`) must be defined at the top of that file. URLs and
    pieces of longer paths are not read."""
    files = our_python_files()
    problems = []
    for number, line in doc_lines(text):
        for match in PY_PATH.finditer(line):
            path, name = match.group(1), match.group(2)
            if "/" in path:
                if path.split("/", 1)[0] in OTHER_PROJECTS:
                    continue
                target = REPO / path
                if not target.is_file():
                    problems.append(f"{number}: {path}: no such file in the repository")
                    continue
            elif (REPO / path).is_file():
                target = REPO / path
            else:
                candidates = files.get(path, [])
                if len(candidates) != 1:
                    where = ", ".join(str(p.relative_to(REPO)) for p in candidates)
                    problems.append(f"{number}: {path}: " + (f"ambiguous ({where}); name its folder" if candidates
                                                             else "no file of that name in the repository"))
                    continue
                target = candidates[0]
            if name and not defines(target, name):
                problems.append(f"{number}: {path}:{name}: {path} defines no {name}")
    return problems


def module_reference_problem(reference: str) -> str | None:
    """None when `reference` (`pipeline.stages.prepare_stage`, `cpfd.cli`) names a module of the
    package, or an attribute (a chain of them) of one; otherwise what is missing."""
    parts = reference.split(".")
    parts = parts if parts[0] == "cpfd" else ["cpfd", *parts]
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a parent is not a package (cpfd.cli.cpfd): try a shorter name
            spec = None
        if spec is None:
            continue
        obj = importlib.import_module(name)
        for i, attribute in enumerate(parts[end:]):
            if not hasattr(obj, attribute):
                owner = ".".join(parts[:end + i])
                if i == 0 and hasattr(obj, "__path__"):  # a package: what follows it would be a module
                    return f"no module {owner}.{attribute}"
                return f"{owner} has no attribute {attribute}"
            obj = getattr(obj, attribute)
        return None
    return f"no module {parts[0]}.{parts[1]}"


def dotted_references(text: str) -> list[tuple[int, str]]:
    """(line number, reference) of every dotted package name in a doc's text; file names aside."""
    found = []
    for number, line in doc_lines(text):
        for match in DOTTED.finditer(line):
            reference = match.group(1)
            if reference.rsplit(".", 1)[1] in FILE_SUFFIXES:
                continue
            found.append((number, reference))
    return found


def stale_references(text: str) -> list[str]:
    """What is wrong with each dotted module reference of a doc, one line each ("LINE: NAME: problem")."""
    problems = []
    for number, reference in dotted_references(text):
        problem = module_reference_problem(reference)
        if problem:
            problems.append(f"{number}: {reference}: {problem}")
    return problems


def test_the_path_check_catches_a_stale_path():
    text = ("The loop is `pipeline/train.py` (`pipeline/distributed.py:TIMEOUT`, `cli.py`, `__init__.py`),\n"
            "the corpus `pipeline/synth.py`; see `benchmarks/common.py:NoSuchClock`, `train.py`, `train_throughput.py`,\n"
            "`nosuch.py`, `.venv/lib/python3.12/site-packages/torch/nn/modules/module.py`,\n"
            "`optimum/exporters/onnx/convert.py` and https://github.com/karpathy/nanoGPT/blob/master/train.py.\n")
    assert stale_paths(text) == [
        "2: pipeline/synth.py: no such file in the repository",
        "2: benchmarks/common.py:NoSuchClock: benchmarks/common.py defines no NoSuchClock",
        "2: train.py: ambiguous (pipeline/train.py, student/train.py, teacher/train.py); name its folder",
        "3: nosuch.py: no file of that name in the repository"]


def test_the_module_check_catches_a_stale_module_and_a_missing_attribute():
    text = ("`python -m cpfd.pipeline.synth` moved to `python -m cpfd.experiment.synth`; the report is\n"
            "`experiment.report.write_report`, not `experiment.report.no_such_function`. `cli.cpfd.commands`\n"
            "lists the commands. Not references: `cpfd.fold`, DIR/experiment.json, docs/experiment.md.\n")
    assert [r for _, r in dotted_references(text)] == [
        "cpfd.pipeline.synth", "cpfd.experiment.synth", "experiment.report.write_report",
        "experiment.report.no_such_function", "cli.cpfd.commands"]
    assert stale_references(text) == ["1: cpfd.pipeline.synth: no module cpfd.pipeline.synth",
                                      "2: experiment.report.no_such_function: "
                                      "cpfd.experiment.report has no attribute no_such_function"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_python_file_a_doc_names_exists(doc):
    problems = stale_paths(doc.read_text())
    assert not problems, f"{doc.relative_to(REPO)} names files that are not there:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_a_doc_names_exists(doc):
    problems = stale_references(doc.read_text())
    assert not problems, f"{doc.relative_to(REPO)} names modules or attributes that are not there:\n" + "\n".join(problems)
