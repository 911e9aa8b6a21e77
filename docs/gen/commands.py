"""Write docs/commands.md: prose per command (commands_prose.md beside this file) + option tables
generated from the click definitions. Rerun after changing a command or option:

    .venv/bin/python docs/gen/commands.py
"""
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cpfd.cli import cpfd  # noqa: E402

ORDER = ["synth", "import", "export-manifest", "info", "train-teacher", "train-student", "dump-teacher", "inspect", "query",
         "calibrate", "distill", "evaluate", "export", "predict", "experiment"]
PROSE = open(Path(__file__).with_name("commands_prose.md")).read()
SECTIONS = {}
for block in ("\n" + PROSE).split("\n@@ ")[1:]:
    name, _, text = block.partition("\n")
    SECTIONS[name.strip()] = text.strip("\n")


def values(p):
    t = p.type
    if p.is_flag:
        return "flag"
    if isinstance(t, click.Choice):
        return ", ".join(f"`{c}`" for c in t.choices)
    if isinstance(t, (click.IntRange, click.FloatRange)):
        kind = "integer" if isinstance(t, click.IntRange) else "number"
        return f"{kind}, {t._describe_range()}"
    if isinstance(t, click.Path):
        return "existing folder" if t.exists and not t.file_okay else "path"
    return {"integer": "integer", "float": "number", "text": "text"}.get(t.name, t.name)


def default(p):
    if p.is_flag:
        return "off"
    if p.required:
        return "required"
    if p.default is None:
        return "-"
    d = p.default
    if isinstance(d, (list, tuple)):
        return "`" + ",".join(f"{x:g}" for x in d) + "`"
    return f"`{d}`"


ctx = click.Context(cpfd, info_name="cpfd")
assert set(ORDER) == set(cpfd.commands), set(cpfd.commands) ^ set(ORDER)
out = [SECTIONS["_intro"], ""]
for name in ORDER:
    cmd = cpfd.commands[name]
    sub = click.Context(cmd, info_name=name, parent=ctx)
    usage = " ".join(cmd.collect_usage_pieces(sub))
    summary = (cmd.help or "").strip().split("\n")[0]
    out += [f"## `cpfd {name}`", "", "```", f"cpfd {name} {usage}", "```", "", summary, ""]
    out += [SECTIONS[name], ""]
    out += ["| option | values | default | meaning |", "| --- | --- | --- | --- |"]
    for p in cmd.params:
        if not isinstance(p, click.Option):
            continue
        flags = ", ".join(f"`{o}`" for o in p.opts + p.secondary_opts)
        help_ = " ".join((p.help or "").replace("|", "\\|").replace("%%", "%").split())
        out.append(f"| {flags} | {values(p)} | {default(p)} | {help_} |")
    out.append("| `-h`, `--help` | flag | off | Show the help and exit. |")
    out.append("")
out += [SECTIONS["_outro"], ""]
open(Path(__file__).resolve().parents[1] / "commands.md", "w").write("\n".join(out))
