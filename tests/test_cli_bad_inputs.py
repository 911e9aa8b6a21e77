"""Every command walked through the classes of bad input and fault of issue 12.

For each case: the exit status, exactly one `error:` line on stderr and no traceback, and every file
that was there before byte-identical afterwards (nothing a user had is lost or half-replaced).
The cases are classes, not examples: an output that is an input; malformed JSON beside the shards;
corpus.json that disagrees with its shards; damaged data pages; option values that pass click's
ranges but cannot work; a resume of another run; a pickled pretrained folder; a bad environment.
"""

import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.schema import CORPUS_COLUMNS
from tests.factories import tiny_corpus
from tests.invoke import FAST, ok, one_error_line, run


@pytest.fixture(scope="module")
def world(tmp_path_factory, corpus, teacher, student, dump):
    """A corpus, a teacher, a student, a dump, a serving manifest and a predictions file, all in one
    folder. The first four are copies of the session's (tests/conftest.py): the cases here try to
    write into them, and check that nothing there changed."""
    root = tmp_path_factory.mktemp("world")
    for name, folder in (("corpus", corpus.path), ("teacher", teacher), ("student", student), ("dump", dump)):
        shutil.copytree(folder, root / name)
    corpus = Corpus(root / "corpus")
    ok("evaluate", root / "student", corpus.path, "--out", root / "predictions.parquet", "--quiet")
    serve = root / "serve"
    serve.mkdir()
    lines = []
    for table in corpus.iter_batches("eval", ["sample_id", "frames", "title", "ocr_text"]):
        for row in table.to_pylist()[:3]:
            names = []
            for k, data in enumerate(row["frames"]):
                Image.open(io.BytesIO(data)).save(serve / f"{row['sample_id']}-{k}.png")
                names.append(f"{row['sample_id']}-{k}.png")
            lines.append(json.dumps({"id": row["sample_id"], "frames": names, "title": row["title"],
                                     "ocr_text": row["ocr_text"], "features": {"duration": 1.0}, "label": "pos"}))
    (serve / "videos.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "corpus": corpus.path, "teacher": root / "teacher", "student": root / "student",
            "dump": root / "dump", "manifest": serve / "videos.jsonl", "predictions": root / "predictions.parquet"}


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused_cleanly(root: Path, args: list, message: str, exit_code: int = 1, env=None) -> None:
    before = snapshot(root)
    result = run(*args) if env is None else _run_env(args, env)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output, result.output
    if exit_code == 1:
        assert message in one_error_line(result.stderr), result.stderr
    else:
        assert message in result.stderr, result.stderr
    after = snapshot(root)
    assert {p: b for p, b in after.items() if p in before} == before, "a file that was there changed"


def _run_env(args, env):
    from click.testing import CliRunner

    from cpfd.cli import cpfd

    return CliRunner().invoke(cpfd, [str(a) for a in args], env=env)


# ---- 1. an output that is, or lies inside, an input (and the reverse) ------------------------

OUTPUT_IS_INPUT = {
    "evaluate --out a corpus shard": (["evaluate", "{student}", "{corpus}", "--out", "{corpus}/train/part-00000.parquet"],
                                      "lies inside CORPUS"),
    "evaluate --out the model weights": (["evaluate", "{student}", "{corpus}", "--out", "{student}/model.safetensors"],
                                         "lies inside MODEL"),
    "evaluate --out the corpus folder": (["evaluate", "{student}", "{corpus}", "--out", "{corpus}"], "is CORPUS"),
    "predict --out the manifest": (["predict", "{student}", "{manifest}", "--out", "{manifest}"], "is MANIFEST"),
    "distill --alpha-log a dump shard": (["distill", "{corpus}", "{dump}", "--out", "{root}/s", "--mapping", "constant",
                                          "--alpha-log", "{dump}/part-00000.parquet", *FAST], "lies inside DUMP"),
    "distill --alpha-log the model's config": (["distill", "{corpus}", "{dump}", "--out", "{root}/s", "--mapping",
                                                "constant", "--alpha-log", "{root}/s/config.json", *FAST],
                                               "would overwrite the model folder's own config.json"),
    "distill --out the dump": (["distill", "{corpus}", "{dump}", "--out", "{dump}", "--mapping", "constant",
                                "--overwrite", *FAST], "is DUMP"),
    "dump-teacher --out the corpus's train folder": (["dump-teacher", "{teacher}", "{corpus}", "--out", "{corpus}/train",
                                                      "--overwrite", "--quiet"], "lies inside CORPUS"),
    "dump-teacher --out the teacher": (["dump-teacher", "{teacher}", "{corpus}", "--out", "{teacher}", "--overwrite",
                                        "--quiet"], "is TEACHER"),
    "train-student --out the corpus": (["train-student", "{corpus}", "--out", "{corpus}", "--overwrite", *FAST],
                                       "is CORPUS"),
    "train-teacher --out a folder holding the corpus": (["train-teacher", "{corpus}", "--out", "{root}", "--overwrite",
                                                         *FAST], "CORPUS"),
    "import into the manifest's folder": (["import", "{manifest}", "{manifest_dir}", "--overwrite", "--quiet"],
                                          "MANIFEST"),
    "experiment --out the corpus": (["experiment", "--corpus", "{corpus}", "--out", "{corpus}", *FAST], "is --corpus"),
}


def fill(args, world):
    paths = {**{k: str(v) for k, v in world.items()}, "manifest_dir": str(world["manifest"].parent)}
    return [a.format(**paths) if isinstance(a, str) else a for a in args]


@pytest.mark.parametrize("case", list(OUTPUT_IS_INPUT))
def test_an_output_that_is_an_input_is_refused(world, case):
    args, message = OUTPUT_IS_INPUT[case]
    refused_cleanly(world["root"], fill(args, world), message)


# ---- 1b. a single-file output never replaces a file an input lists, a cpfd folder's file, or one that exists

FILE_OUTPUT_REPLACES = {
    "predict --out a frame the manifest lists": (
        ["predict", "{student}", "{manifest}", "--out", "{first_frame}", "--overwrite", "--quiet"],
        "is a frame or video file MANIFEST lists"),
    "predict --out another corpus's corpus.json": (
        ["predict", "{student}", "{manifest}", "--out", "{corpus}/corpus.json", "--overwrite", "--quiet"],
        "lies inside {corpus}, a corpus folder"),
    "predict --out a file that exists": (["predict", "{student}", "{manifest}", "--out", "{predictions}", "--quiet"],
                                         "exists; pass --overwrite"),
    "predict --out a folder": (["predict", "{student}", "{manifest}", "--out", "{root}/a-folder", "--overwrite",
                                "--quiet"], "is a folder"),
    "evaluate --out a file that exists": (["evaluate", "{student}", "{corpus}", "--out", "{predictions}", "--quiet"],
                                          "exists; pass --overwrite"),
    "evaluate --out inside another model": (
        ["evaluate", "{student}", "{corpus}", "--out", "{teacher}/p.parquet", "--overwrite", "--quiet"],
        "lies inside {teacher}, a model folder"),
    "evaluate --out a dump's file": (
        ["evaluate", "{student}", "{corpus}", "--out", "{dump}/_manifest.json", "--overwrite", "--quiet"],
        "a teacher dump folder"),
    "distill --alpha-log the weights of the dump's teacher": (
        ["distill", "{corpus}", "{dump}", "--out", "{root}/s", "--mapping", "constant", "--alpha-log",
         "{dump_teacher}/model.safetensors", "--overwrite", *FAST], "the teacher the dump was made from"),
    "distill --alpha-log a file that exists": (
        ["distill", "{corpus}", "{dump}", "--out", "{root}/s", "--mapping", "constant", "--alpha-log", "{manifest}",
         *FAST], "exists; pass --overwrite"),
}


@pytest.mark.parametrize("case", list(FILE_OUTPUT_REPLACES))
def test_a_single_file_output_never_replaces_what_it_must_not(world, case):
    args, message = FILE_OUTPUT_REPLACES[case]
    (world["root"] / "a-folder").mkdir(exist_ok=True)
    extra = {"first_frame": next(world["manifest"].parent.glob("*.png")),
             "dump_teacher": json.loads((world["dump"] / "_manifest.json").read_text())["teacher"]["dir"]}
    refused_cleanly(world["root"], fill(args, {**world, **extra}), fill([message], world)[0])
    assert not (world["root"] / "s").exists()


# ---- 2. malformed JSON beside the shards --------------------------------------------------

MALFORMED = {"a list": [], "null": None, "a missing key": "drop", "a mistyped key": "retype", "not JSON": "{oops"}


def malformed_copy(src: Path, dst: Path, name: str, how, key: str, wrong) -> Path:
    shutil.copytree(src, dst)
    path = dst / name
    if how == "drop":
        data = json.loads(path.read_text())
        del data[key]
        path.write_text(json.dumps(data))
    elif how == "retype":
        data = json.loads(path.read_text())
        data[key] = wrong
        path.write_text(json.dumps(data))
    elif isinstance(how, str):
        path.write_text(how)
    else:
        path.write_text(json.dumps(how))
    return dst


@pytest.mark.parametrize("how", list(MALFORMED))
@pytest.mark.parametrize("command", ["info", "train-student", "evaluate", "dump-teacher"])
def test_a_malformed_corpus_json_is_one_line(world, tmp_path, how, command):
    corpus = malformed_copy(world["corpus"], tmp_path / "c", CORPUS_JSON, MALFORMED[how], "classes", "neg,pos")
    args = {"info": ["info", corpus], "train-student": ["train-student", corpus, "--out", tmp_path / "s", *FAST],
            "evaluate": ["evaluate", world["student"], corpus, "--quiet"],
            "dump-teacher": ["dump-teacher", world["teacher"], corpus, "--out", tmp_path / "d", "--quiet"]}[command]
    refused_cleanly(tmp_path, args, "corpus.json")


@pytest.mark.parametrize("how", list(MALFORMED))
@pytest.mark.parametrize("command", ["inspect", "calibrate", "query", "distill", "info"])
def test_a_malformed_dump_manifest_is_one_line(world, tmp_path, how, command):
    dump = malformed_copy(world["dump"], tmp_path / "d", "_manifest.json", MALFORMED[how], "shards", {"file": 3})
    args = {"inspect": ["inspect", dump], "calibrate": ["calibrate", dump], "query": ["query", dump, "SELECT 1"],
            "distill": ["distill", world["corpus"], dump, "--out", tmp_path / "s", "--mapping", "tanh", *FAST],
            "info": ["info", dump]}[command]
    refused_cleanly(tmp_path, args, "_manifest.json")


@pytest.mark.parametrize("how", list(MALFORMED))
@pytest.mark.parametrize("command", ["evaluate", "predict", "dump-teacher", "info"])
def test_a_malformed_model_config_is_one_line(world, tmp_path, how, command):
    model = malformed_copy(world["teacher" if command == "dump-teacher" else "student"], tmp_path / "m", "config.json",
                           MALFORMED[how], "num_classes", "two")
    args = {"evaluate": ["evaluate", model, world["corpus"], "--quiet"],
            "predict": ["predict", model, world["manifest"], "--quiet"],
            "dump-teacher": ["dump-teacher", model, world["corpus"], "--out", tmp_path / "d", "--quiet"],
            "info": ["info", model]}[command]
    refused_cleanly(tmp_path, args, "config.json")


def test_a_malformed_training_record_is_one_line(world, tmp_path):
    model = malformed_copy(world["student"], tmp_path / "m", "training.json", {"epochs": "many"}, "", None)
    refused_cleanly(tmp_path, ["info", model], "training.json")


# ---- 3. corpus.json that disagrees with its shards; damaged data pages ------------------------

@pytest.mark.parametrize("key, value, message", [
    ("frames_per_video", 3, "frames values, corpus.json says 3"),
    ("features", ["duration", "extra"], "features values, corpus.json says 2"),
    ("privileged_features", ["reports"], "privileged values, corpus.json says 1"),
    ("image_size", 24, "corpus.json says 24x24"),
])
def test_corpus_json_that_disagrees_with_the_shards_is_one_line(world, tmp_path, key, value, message):
    corpus = tmp_path / "c"
    shutil.copytree(world["corpus"], corpus)
    meta = json.loads((corpus / CORPUS_JSON).read_text())
    meta[key] = value
    (corpus / CORPUS_JSON).write_text(json.dumps(meta))
    command = "train-teacher" if key == "privileged_features" else "train-student"
    refused_cleanly(tmp_path, [command, corpus, "--out", tmp_path / "s", *FAST, "--patch-size", "4"], message)


def test_a_damaged_data_page_is_one_line(world, tmp_path):
    corpus = tmp_path / "c"
    shutil.copytree(world["corpus"], corpus)
    shard = corpus / "train" / "part-00000.parquet"
    chunk = pq.ParquetFile(shard).metadata.row_group(0).column(CORPUS_COLUMNS.index("frames"))
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2  # inside a data page, past its header
    data = bytearray(shard.read_bytes())
    data[middle:middle + 64] = bytes(64)  # the footer, and so `info` and the id check, stay intact
    shard.write_bytes(bytes(data))
    ok("info", corpus)
    refused_cleanly(tmp_path, ["train-student", corpus, "--out", tmp_path / "s", *FAST], "part-00000.parquet")


# ---- 4. option values that pass click's ranges but cannot work; environment; resume ---------

@pytest.mark.parametrize("options, message", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--hidden-size", "48", "--num-heads", "5"], "is not divisible by --num-heads 5"),
    (["--patch-size", "64"], "--patch-size 64 is larger"),
    (["--hidden-size", "65536"], "above the largest cpfd builds"),
    (["--vocab-size", "5000000"], "above the largest cpfd builds"),
])
def test_options_that_cannot_work_are_one_line(world, tmp_path, options, message):
    refused_cleanly(tmp_path, ["train-student", world["corpus"], "--out", tmp_path / "s", *FAST, *options], message)


@pytest.mark.parametrize("args, message", [
    (["distill", "{corpus}", "{dump}", "--out", "{tmp}/s", "--mapping", "constant", "--temperature", "nan"],
     "--temperature must be a positive finite number"),
    (["distill", "{corpus}", "{dump}", "--out", "{tmp}/s", "--mapping", "tanh", "--beta", "inf"], "beta must be finite"),
    (["query", "{dump}", ""], "the SQL statement is empty"),
    (["query", "{dump}", "COPY (SELECT 1) TO '{dump}/x.parquet'"], "reading statements"),
    (["synth", "{tmp}/c", "--privileged-strength", "nan"], "--privileged-strength"),
])
def test_other_values_that_cannot_work_are_one_line(world, tmp_path, args, message):
    paths = {**{k: str(v) for k, v in world.items()}, "tmp": str(tmp_path)}
    refused_cleanly(world["root"], [a.format(**paths) for a in [*args]] + (FAST if args[0] == "distill" else []),
                    message)
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("env, message", [({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
                                          ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK < WORLD_SIZE")])
def test_a_bad_torchrun_environment_is_one_line(world, tmp_path, env, message):
    refused_cleanly(tmp_path, ["dump-teacher", world["teacher"], world["corpus"], "--out", tmp_path / "d", "--quiet"],
                    message, env=env)


def interrupted_run(corpus, out, monkeypatch, *options) -> None:
    """A train-student killed at its second step, after a checkpoint at the first."""
    import torch

    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def crash_at_step_2(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_at_step_2)
    assert run("train-student", corpus, "--out", out, *FAST, *options, "--checkpoint-every", "1").exit_code != 0
    monkeypatch.setattr(torch.optim.AdamW, "step", real)


def test_resume_with_other_model_options_or_another_corpus_is_one_line(world, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    interrupted_run(world["corpus"], out, monkeypatch)
    refused_cleanly(out, ["train-student", world["corpus"], "--out", out, *FAST, "--hidden-size", "16", "--resume"],
                    "hidden_size was 32, now 16")
    other = tiny_corpus(tmp_path / "other", n_train=40, n_eval=16, seed=3, features=False)
    refused_cleanly(out, ["train-student", other.path, "--out", out, *FAST, "--resume"], "--resume needs the inputs")


def test_a_pickled_pretrained_folder_is_one_line(world, tmp_path):
    from transformers import ViTConfig, ViTModel

    import torch

    folder = tmp_path / "vit"
    model = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64))
    model.save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):  # what an older transformers wrote: a pickle
        weights.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    refused_cleanly(tmp_path, ["train-student", world["corpus"], "--out", tmp_path / "s", *FAST, "--vision-model", folder],
                    "cpfd loads safetensors only")


def test_an_unfinished_run_points_at_resume(world, tmp_path, monkeypatch):
    out = tmp_path / "s"
    interrupted_run(world["corpus"], out, monkeypatch)
    refused_cleanly(tmp_path, ["train-student", world["corpus"], "--out", out, *FAST], "pass --resume to continue it")
