"""The `cpfd` command line: option parsing only. Each command calls one library function.

Library code raises `CpfdError` for mistakes a user can fix; here it becomes one `error: ...`
line on stderr and exit status 1 (`cpfd --debug ...` shows the traceback instead). Usage
mistakes (a bad option) are click's, exit status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from storage.errors import CpfdError


class CpfdClickError(click.ClickException):
    exit_code = 1

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


class CpfdGroup(click.Group):
    """A group that turns library errors into one line, unless --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (CpfdError, OSError) as e:
            if ctx.params.get("debug"):
                raise
            message = str(e) if isinstance(e, CpfdError) else f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}".lstrip(": ")
            raise CpfdClickError(message) from None


def quiet_option(f):
    return click.option("--quiet", is_flag=True, help="No progress bars.")(f)


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True, help="Replace what OUT already holds.")(f)


@click.group(cls=CpfdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="cpfd", prog_name="cpfd")
def cpfd(debug):
    """Confidence-aware Privileged Feature Distillation (CIKM 2024) for short-video classifiers.

    A teacher that sees privileged dense features runs once over the corpus and stores its
    logits and per-sample losses; a frames+text student then learns from them, trusting the
    teacher where its loss is low.

    Example:

        cpfd synth runs/corpus && cpfd info runs/corpus
    """


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------

@cpfd.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(["task1", "task2", "task3", "task4", "task5"]), default="task1",
              show_default=True, help="Which of the five paper-like tasks to simulate (docs/synthetic.md).")
@click.option("--train-samples", type=click.IntRange(min=1), default=None,
              help="Videos in the train split (default: the preset's).")
@click.option("--eval-samples", type=click.IntRange(min=1), default=None,
              help="Videos in the eval split (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the same seed writes the same corpus.")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=4, show_default=True, help="Frames per video.")
@click.option("--image-size", type=click.IntRange(min=8), default=32, show_default=True, help="Frame height and width in pixels.")
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=262_144, show_default=True,
              help="Rows per Parquet shard.")
@overwrite_option
@quiet_option
def synth(out, preset, train_samples, eval_samples, seed, frames_per_video, image_size, rows_per_shard, overwrite, quiet):
    """Write a synthetic short-video corpus (frames, title, OCR text, privileged features).

    Example:

        cpfd synth runs/task3 --preset task3 --seed 1
    """
    from pipeline.synth import write_synthetic_corpus

    meta = write_synthetic_corpus(
        out, preset=preset, train_samples=train_samples, eval_samples=eval_samples, seed=seed,
        frames_per_video=frames_per_video, image_size=image_size, rows_per_shard=rows_per_shard,
        overwrite=overwrite, progress=not quiet,
    )
    rows = ", ".join(f"{s} {v['rows']}" for s, v in meta["splits"].items())
    click.echo(f"wrote {out} ({preset}, seed {seed}): {rows} rows")


@cpfd.command("import")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--eval-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Share of ids hashed into the eval split (lines with `split` keep theirs).")
@click.option("--classes", type=str, default=None,
              help="Comma-separated class names in index order, for string labels (default: sorted names).")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frames kept per video: evenly sampled if more, the last repeated if fewer.")
@click.option("--image-size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Frames are resized to this square size and re-encoded as PNG.")
@click.option("--task", type=str, default=None, help="Task name stored in corpus.json (default: the manifest's name).")
@overwrite_option
@quiet_option
def import_(manifest, out, eval_fraction, classes, frames_per_video, image_size, task, overwrite, quiet):
    """Turn a JSON Lines manifest (docs/formats.md) into a corpus.

    Example:

        cpfd import videos.jsonl runs/my-corpus --classes ok,violating
    """
    from storage.manifest import import_manifest

    report = import_manifest(
        manifest, out, eval_fraction=eval_fraction,
        classes=[c.strip() for c in classes.split(",")] if classes else None,
        frames_per_video=frames_per_video, image_size=image_size, task=task,
        overwrite=overwrite, progress=not quiet,
    )
    click.echo(f"read {report['lines_read']} lines, wrote {report['rows_written']} rows "
               f"(train {report['train_rows']}, eval {report['eval_rows']}) to {out}")


@cpfd.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path, as_json):
    """Say what a corpus, teacher dump or model folder holds.

    Example:

        cpfd info runs/corpus
    """
    from pipeline.info import describe, format_description

    description = describe(path)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


# ---------------------------------------------------------------------------------------------
# Commands of later issues: listed so `cpfd --help` shows the whole tool, refusing cleanly.
# ---------------------------------------------------------------------------------------------

def _not_built(name: str, summary: str, issue: int):
    @cpfd.command(name, help=f"{summary}\n\nNot built yet (issue {issue}).",
                  context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command():
        raise CpfdError(f"`cpfd {name}` is not built yet (issue {issue})")

    return command


_not_built("train-teacher", "Train DF-X-VLM, the teacher (frames + text + privileged features).", 3)
_not_built("train-student", "Train X-VLM without distillation (the baseline student).", 3)
_not_built("evaluate", "ROC AUC, PR AUC and F1 of a model on a corpus split.", 3)
_not_built("predict", "Score raw inputs from a manifest with a student (the serve path).", 3)
_not_built("dump-teacher", "Run the teacher once over a corpus split; store logits and losses.", 4)
_not_built("query", "DuckDB SQL over a teacher dump (views teacher, corpus, predictions).", 4)
_not_built("inspect", "Teacher-loss quantiles, histograms and per-label means of a dump.", 4)
_not_built("calibrate", "Alpha-mapping parameters from a dump's loss distribution.", 4)
_not_built("distill", "Train X-VLM from a corpus and a teacher dump (PFD or CPFD).", 5)
_not_built("experiment", "The whole pipeline on one corpus, with the paper's tables.", 6)


def main() -> None:
    cpfd(prog_name="cpfd")


if __name__ == "__main__":
    main()
