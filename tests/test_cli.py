"""cli.py, the command line as a whole: every command of docs/commands.md exists and explains itself,
errors are one line, what installing adds, and which commands refuse to run under torchrun."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cpfd.cli import cpfd

DESIGN_COMMANDS = [
    "synth", "import", "train-teacher", "train-student", "dump-teacher", "distill", "evaluate", "predict",
    "query", "inspect", "calibrate", "experiment", "info",
]


def test_help_lists_every_command():
    result = CliRunner().invoke(cpfd, ["--help"])
    assert result.exit_code == 0
    for name in DESIGN_COMMANDS:
        assert f"  {name} " in result.output, name


@pytest.mark.parametrize("name", DESIGN_COMMANDS)
def test_every_command_has_help(name):
    command = cpfd.commands[name]
    assert command.help and command.help.strip()
    result = CliRunner().invoke(cpfd, [name, "--help"])
    assert result.exit_code == 0 and "Usage: cpfd " + name in result.output
    for param in command.params:
        if param.name != "help" and param.param_type_name == "option":
            assert param.help, f"{name} --{param.name} has no help"


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(cpfd, ["info", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and result.output == f"error: {tmp_path / 'nothing'}: no such file or directory\n"
    result = CliRunner().invoke(cpfd, ["--debug", "info", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and result.exception is not None


def test_usage_errors_exit_2():
    result = CliRunner().invoke(cpfd, ["synth"])
    assert result.exit_code == 2


def test_installing_adds_one_top_level_name(tmp_path):
    """`pip install` puts `cpfd` into site-packages, and none of the repository's folder names."""
    import subprocess
    import sys
    from importlib.metadata import distribution

    assert distribution("cpfd").read_text("top_level.txt").split() == ["cpfd"]
    probe = "import importlib.util as u; print([n for n in ('cli', 'pipeline', 'storage', 'student', 'teacher') if u.find_spec(n)])"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_built_wheel_holds_one_package(tmp_path):
    """The same for a wheel (non-editable install): slow, it builds one (~10 s)."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    import shutil

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"  # setuptools writes build/ beside the sources: build a copy
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("cpfd-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cpfd"}
    assert {"cpfd/cli.py", "cpfd/pipeline/train.py", "cpfd/storage/corpus.py"} <= set(zipfile.ZipFile(wheel).namelist())


def test_written_files_follow_the_umask(tmp_path):
    """Every file of a model folder, the weights too, gets the mode the umask gives (safetensors alone
    would write 0600, and a serving account could not read the weights)."""
    import os
    import stat

    from tests.factories import tiny_corpus
    from tests.invoke import FAST, ok

    corpus = tiny_corpus(tmp_path / "c", n_train=32, n_eval=16)
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--keep-checkpoint")
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "s").iterdir() if p.is_file()}
    assert {"model.safetensors", "config.json", "training.json", "checkpoint.safetensors"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_a_missing_input_fails_before_torch_is_imported(tmp_path):
    """A typo in a path is one line at once, not after seconds of imports."""
    import subprocess
    import sys

    script = ("import sys\nfrom cpfd.cli import main\nsys.argv = ['cpfd', 'train-student', %r, '--out', %r]\n"
              "try:\n    main()\nexcept SystemExit as e:\n    print('torch' in sys.modules, e.code)")
    done = subprocess.run([sys.executable, "-c", script % (str(tmp_path / "nope"), str(tmp_path / "s"))],
                          capture_output=True, text=True)
    assert done.stdout.split() == ["False", "1"], done.stdout + done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'nope'}: no such corpus directory"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`cpfd query ... | head -3`: no `error: Broken pipe`, no traceback; exit status 141, as a tool
    stopped by SIGPIPE."""
    import subprocess
    import sys

    from tests.factories import run_dump, tiny_corpus

    corpus = tiny_corpus(tmp_path / "c", n_train=20000, n_eval=8, frames=False, text=False)
    run_dump(tmp_path / "d", corpus)  # 20,000 lines of output: more than a pipe holds
    done = subprocess.run(["bash", "-c", f"{sys.executable} -m cpfd.cli query {tmp_path / 'd'} "
                                         "'SELECT sample_id FROM teacher' | head -3; echo status ${PIPESTATUS[0]}"],
                          capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "status 141", done.stdout[-300:] + done.stderr
    assert done.stderr == "", done.stderr


def test_commands_are_listed_in_pipeline_order_with_their_whole_summary():
    result = CliRunner().invoke(cpfd, ["--help"])
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.startswith("  ") and
              not line.startswith("   ")]
    assert listed[:4] == ["synth", "import", "export-manifest", "info"] and listed[-1] == "experiment"
    assert "..." not in result.output.split("Commands:")[1]


@pytest.mark.parametrize("command", ["synth", "import", "evaluate", "predict", "calibrate", "experiment"])
def test_a_command_that_runs_once_is_refused_under_torchrun(command, tmp_path, monkeypatch):
    """Under torchrun every process would run it and write the same output: one line says so, before
    anything is read or written; the commands that split their work are not refused there."""
    from cpfd.cli import UNDER_TORCHRUN
    from tests.invoke import refused, run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    refused(command, tmp_path / "in", tmp_path / "out",
            message=f"rank 0 of 2: cpfd {command} runs as one process, not under torchrun")
    monkeypatch.setenv("RANK", "1")  # the other ranks say it once, to torchrun's report, not on stderr
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path.parent / f"{tmp_path.name}-error.json"))
    result = run(command, tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 1 and "error:" not in result.output, result.output
    said = json.loads(Path(os.environ["TORCHELASTIC_ERROR_FILE"]).read_text())["message"]["message"]
    assert said == f"error: rank 1 of 2: cpfd {command} runs as one process, not under torchrun; only " \
                   f"{', '.join(UNDER_TORCHRUN)} split their work over a torchrun job's processes"
    assert list(tmp_path.iterdir()) == []
    for name in UNDER_TORCHRUN:  # reaches the command (its own usage error), not the refusal
        result = run(name)
        assert result.exit_code == 2 and "Missing argument" in result.output, result.output
    assert set(UNDER_TORCHRUN) < set(cpfd.commands)
