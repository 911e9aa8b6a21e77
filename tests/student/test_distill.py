"""student/distill.py: `cpfd distill` end to end through the CLI, the student stage of docs/method.md.

The corpus and the teacher's dump of its train split are the session's (tests/conftest.py); the
teacher folder that dump names was deleted once the dump was written, so everything here runs from
the corpus and the dump alone, as the design says the student stage must. The corpus has three
train shards (40 + 40 + 20 rows, row groups of at most 16), so batches cross row groups and shards.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import cpfd.student.distill as distill_module
from cpfd.pipeline.data import training_rows
from cpfd.storage.corpus import Corpus
from cpfd.student.cpfd import MAPPING_DEFAULTS, MAPPING_PARAMS, alpha_from_loss, quantiles_of, resolve_params
from tests.factories import WEIGHTS_TOLERANCE, layout_corpus, max_weight_difference, run_dump, tiny_corpus
from tests.invoke import FAST, MODEL, ok, run

REPO = Path(__file__).resolve().parents[2]


def training_record(folder) -> dict:
    return json.loads((Path(folder) / "training.json").read_text())


def dump_losses(dump) -> np.ndarray:
    """Every stored teacher loss, read with pyarrow (not through the code under test)."""
    return np.concatenate([pq.read_table(f, columns=["teacher_loss"]).column(0).to_numpy()
                           for f in sorted(Path(dump).glob("*.parquet"))])


def dumped_by(dump) -> Path:
    """The teacher folder a dump's manifest names."""
    return Path(json.loads((Path(dump) / "_manifest.json").read_text())["teacher"]["dir"])


@pytest.fixture(scope="module")
def eval_dump(corpus, teacher, tmp_path_factory):
    """The teacher's dump of the eval split: what distill must refuse to train on."""
    out = tmp_path_factory.mktemp("d") / "eval"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--split", "eval", "--quiet")
    return out


@pytest.fixture(scope="module")
def distilled(corpus, dump, tmp_path_factory):
    """A CPFD student (neg-sigmoid, calibrated, T = 2) over two epochs; (folder, CLI output)."""
    assert not dumped_by(dump).exists()
    out = tmp_path_factory.mktemp("s") / "cpfd"
    result = ok("distill", corpus.path, dump, "--out", out, "--mapping", "neg-sigmoid", "--temperature", "2",
                *MODEL, "--epochs", "2")
    return out, result.output


def test_distill_runs_without_the_teacher_and_records_the_mapping(corpus, dump, distilled):
    out, output = distilled
    assert not dumped_by(dump).exists()
    assert {"config.json", "model.safetensors", "tokenizer", "training.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["architecture"] == "X-VLM"
    record = training_record(out)
    assert record["stage"] == "distill" and record["command"].startswith("cpfd distill")
    assert record["distillation"]["mapping"] == "neg-sigmoid"
    assert set(record["distillation"]["params"]) == {"beta", "center"}
    assert record["distillation"]["calibrated"] == ["beta", "center"]
    assert record["distillation"]["temperature"] == 2.0
    manifest = json.loads((dump / "_manifest.json").read_text())
    assert record["dump"]["teacher_weights_sha256"] == manifest["teacher"]["weights_sha256"]
    assert record["corpus"]["fingerprint"] == corpus.fingerprint
    assert len(record["epochs"]) == 2
    assert all(0.0 <= e["train_alpha"] <= 1.0 for e in record["epochs"])
    assert "beta=" in output and "(calibrated)" in output and "temperature 2" in output


def test_a_distilled_student_evaluates_like_any_model(corpus, distilled):
    result = ok("evaluate", distilled[0], corpus.path, "--json", "--quiet")
    metrics = json.loads(result.output)
    assert metrics["architecture"] == "X-VLM" and metrics["rows"] == 24
    assert 0.0 <= metrics["roc_auc"] <= 1.0


def test_the_student_stage_never_imports_the_teacher(corpus, dump, tmp_path):
    script = f"""
import sys, torch
torch.set_num_threads(1)
from click.testing import CliRunner
from cpfd.cli import cpfd
args = {json.dumps(["distill", str(corpus.path), str(dump), "--out", str(tmp_path / "s"), "--mapping", "tanh",
                    *MODEL, "--max-steps", "2"])}
result = CliRunner().invoke(cpfd, args)
assert result.exit_code == 0, result.output
teacher = sorted(m for m in sys.modules if m == "cpfd.teacher" or m.startswith("cpfd.teacher."))
assert not teacher, f"the student stage imported {{teacher}}"
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "s" / "model.safetensors").exists()


def test_distill_never_reads_the_privileged_column(corpus, dump, tmp_path, monkeypatch):
    asked = []
    read_unit, iter_batches, read_column = Corpus.read_unit, Corpus.iter_batches, Corpus.read_column

    def spy_read_unit(self, unit, columns):
        asked.append(tuple(columns))
        return read_unit(self, unit, columns)

    def spy_iter_batches(self, split, columns, *a, **k):
        asked.append(tuple(columns))
        return iter_batches(self, split, columns, *a, **k)

    def spy_read_column(self, split, column):
        asked.append((column,))
        return read_column(self, split, column)

    monkeypatch.setattr(Corpus, "read_unit", spy_read_unit)
    monkeypatch.setattr(Corpus, "iter_batches", spy_iter_batches)
    monkeypatch.setattr(Corpus, "read_column", spy_read_column)
    ok("distill", corpus.path, dump, "--out", tmp_path / "s", "--mapping", "threshold", *FAST, "--num-workers", "0")
    assert any("frames" in c for c in asked)  # the spies saw the training reads
    assert all("privileged" not in c for c in asked), asked


def test_teacher_columns_arrive_aligned_with_the_corpus_rows(corpus, dump, tmp_path, monkeypatch):
    """Every batch's stored teacher_loss is the CE of its stored logits against the corpus labels:
    rows of the dump and of the corpus stay paired through shuffling, row groups and shards."""
    batches = []
    real_terms = distill_module.cpfd_loss_terms

    def spy(student_logits, teacher_logits, labels, temperature):
        batches.append((teacher_logits.detach().cpu(), labels.cpu()))  # on the GPU under --device auto
        return real_terms(student_logits, teacher_logits, labels, temperature)

    monkeypatch.setattr(distill_module, "cpfd_loss_terms", spy)
    ok("distill", corpus.path, dump, "--out", tmp_path / "s", "--mapping", "constant", "--alpha", "0.5", *FAST)
    logits = torch.cat([b[0] for b in batches]).double()
    labels = torch.cat([b[1] for b in batches])
    seen_losses = F.cross_entropy(logits, labels, reduction="none").numpy()
    # each training row (the train split less its validation rows) once per epoch, with its own
    # label: the multiset of (label, loss) is the dump's over those rows
    training = training_rows(0.1).mask(corpus.read_column("train", "sample_id"))
    assert len(labels) == training.sum() < 100
    stored = sorted(zip(np.array(corpus.read_column("train", "label").to_pylist())[training].tolist(),
                        dump_losses(dump)[training].tolist()))
    seen = sorted(zip(labels.tolist(), seen_losses.tolist()))
    assert [s[0] for s in seen] == [s[0] for s in stored]
    assert np.allclose([s[1] for s in seen], [s[1] for s in stored], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mapping, given", [
    ("constant", {"alpha": 0.5}),
    ("threshold", {}),
    ("neg-sigmoid", {}),
    ("tanh", {}),
    ("exp-decay", {}),
    ("neg-sigmoid", {"beta": 3.0}),  # center still calibrated
])
def test_parameters_not_given_are_calibrated_printed_saved_and_logged(corpus, dump, tmp_path, mapping, given):
    options = [a for k, v in given.items() for a in (f"--{k.replace('_', '-')}", v)]
    alpha_log = tmp_path / "alpha.parquet"
    result = ok("distill", corpus.path, dump, "--out", tmp_path / "s", "--mapping", mapping, *options,
                "--alpha-log", alpha_log, *FAST)
    losses = dump_losses(dump)
    expected = resolve_params(mapping, given, quantiles_of(losses))
    defaults = MAPPING_DEFAULTS.get(mapping, {})
    calibrated = [k for k in MAPPING_PARAMS[mapping] if k not in given and k not in defaults]

    # "mapping M: k=v (calibrated), k=v; temperature T"
    line = result.output.splitlines()[0]
    assert line.startswith(f"mapping {mapping}: ")
    printed = re.findall(r"(\w+)=([-+.\deE]+)( \(calibrated\))?(?: \(default\))?", line.split("; ")[0])
    assert [k for k, _, _ in printed] == list(expected)
    assert [float(v) for _, v, _ in printed] == pytest.approx(list(expected.values()), rel=1e-3)
    assert [k for k, _, mark in printed if mark] == calibrated

    record = training_record(tmp_path / "s")["distillation"]
    assert record["mapping"] == mapping
    assert record["params"] == pytest.approx(expected, rel=1e-9)
    assert record["calibrated"] == calibrated

    log = pq.read_table(alpha_log)
    assert log.column_names == ["sample_id", "teacher_loss", "alpha"]
    assert log.column("sample_id").to_pylist() == corpus.read_column("train", "sample_id").to_pylist()
    assert np.array_equal(log.column("teacher_loss").to_numpy(), losses)
    alpha = log.column("alpha").to_numpy()
    assert np.allclose(alpha, alpha_from_loss(losses, mapping, **record["params"]), atol=1e-6)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    # one epoch sees every training row once: the epoch's mean alpha is the mean over their log rows
    training = training_rows(0.1).mask(log.column("sample_id"))
    assert training_record(tmp_path / "s")["epochs"][0]["train_alpha"] == pytest.approx(alpha[training].mean(), rel=1e-5)


def test_alpha_zero_is_the_baseline_student(corpus, dump, tmp_path):
    """With a constant alpha of 0 the loss is (1 - 0) CE + 0 KL: plain cross-entropy, the same
    batches in the same order, so the same weights as `train-student` (within the tolerance of
    two runs on one machine)."""
    ok("train-student", corpus.path, "--out", tmp_path / "baseline", *FAST, "--seed", "3")
    ok("distill", corpus.path, dump, "--out", tmp_path / "pfd0", "--mapping", "constant", "--alpha", "0",
       *FAST, "--seed", "3")
    assert max_weight_difference(tmp_path / "baseline", tmp_path / "pfd0") <= WEIGHTS_TOLERANCE
    baseline, distilled = training_record(tmp_path / "baseline"), training_record(tmp_path / "pfd0")
    for a, b in zip(baseline["epochs"], distilled["epochs"]):
        assert b["train_alpha"] == 0.0
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["val_roc_auc"] == pytest.approx(a["val_roc_auc"], abs=1e-3)


# name: (the command's arguments, {placeholders} filled from `paths` below; part of the one-line message)
REFUSALS = {
    "another corpus": (["{other_corpus}", "{dump}", "--mapping", "constant"], "dump of another corpus"),
    "the eval split": (["{corpus}", "{eval_dump}", "--mapping", "constant"], "dump of the eval split"),
    "a missing shard": (["{corpus}", "{missing_shard}", "--mapping", "constant"], "is missing"),
    "a changed shard": (["{corpus}", "{changed_shard}", "--mapping", "constant"], "sha256 differs"),
    "an unfinished dump": (["{corpus}", "{unfinished}", "--mapping", "constant"], "no _manifest.json"),
    "a parameter of another mapping": (["{corpus}", "{dump}", "--mapping", "constant", "--tau", "1"],
                                       "tau does not apply to mapping constant (it takes alpha)"),
    "alpha above 1": (["{corpus}", "{dump}", "--mapping", "constant", "--alpha", "1.5"], "alpha must be in [0, 1]"),
    "alpha_min 0": (["{corpus}", "{dump}", "--mapping", "exp-decay", "--alpha-min", "0"],
                    "alpha_min must be positive"),
    "loss_max below loss_min": (["{corpus}", "{dump}", "--mapping", "exp-decay", "--loss-min", "2", "--loss-max", "1"],
                                "loss_max must be greater than loss_min"),
    "an increasing threshold": (["{corpus}", "{dump}", "--mapping", "threshold", "--alpha-high", "0.1",
                                 "--alpha-low", "0.9"], "alpha_high must be >= alpha_low"),
    "a negative beta": (["{corpus}", "{dump}", "--mapping", "tanh", "--beta", "-1"], "beta must be >= 0"),
    "temperature 0": (["{corpus}", "{dump}", "--mapping", "constant", "--temperature", "0"],
                      "--temperature must be a positive finite number"),
}


@pytest.fixture(scope="module")
def broken(corpus, dump, tmp_path_factory):
    """Damaged copies of the dump, and a corpus of other ids."""
    root = tmp_path_factory.mktemp("broken")
    missing = root / "missing"
    shutil.copytree(dump, missing)
    (missing / "part-00001.parquet").unlink()
    changed = root / "changed"
    shutil.copytree(dump, changed)
    table = pq.read_table(changed / "part-00001.parquet")
    logits = np.array(table.column("logits").to_pylist(), dtype=np.float32)
    logits[0] = logits[0][::-1]  # a row's logits swapped: same layout, other content
    table = table.set_column(2, table.schema.field(2), pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 2))
    # same rows and row groups, a valid file: only the manifest's sha256 can tell
    pq.write_table(table, changed / "part-00001.parquet", row_group_size=16)
    unfinished = root / "unfinished"
    shutil.copytree(dump, unfinished)
    (unfinished / "_manifest.json").unlink()
    # other ids (the fingerprint hashes ids and row counts), same classes and inputs
    other = tiny_corpus(root / "other", n_train=90, n_eval=24, rows_per_shard=40, row_group_rows=16)
    return {"other_corpus": other.path, "missing_shard": missing, "changed_shard": changed, "unfinished": unfinished}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_one_line_errors_before_any_training(corpus, dump, eval_dump, broken, tmp_path, case):
    template, message = REFUSALS[case]
    paths = {"corpus": corpus.path, "dump": dump, "eval_dump": eval_dump, **broken}
    args = [a.format(**paths) for a in template]
    result = run("distill", *args, "--out", tmp_path / "s", *FAST)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_resume_after_an_interruption_ends_with_the_same_weights(corpus, dump, tmp_path, monkeypatch):
    args = ["--mapping", "neg-sigmoid", "--temperature", "2", *MODEL, "--epochs", "2", "--seed", "5"]
    ok("distill", corpus.path, dump, "--out", tmp_path / "full", *args)

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crash_on_step_9(self, *a, **k):  # 6 steps per epoch (92 training rows): dies in epoch 2
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_step_9)
    result = run("distill", corpus.path, dump, "--out", tmp_path / "cut", *args, "--checkpoint-every", "2")
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert result.exit_code != 0 and calls["n"] == 9
    assert len(training_record(tmp_path / "cut")["epochs"]) == 1
    ok("distill", corpus.path, dump, "--out", tmp_path / "cut", *args, "--checkpoint-every", "2", "--resume")

    assert max_weight_difference(tmp_path / "full", tmp_path / "cut") <= WEIGHTS_TOLERANCE
    full, cut = training_record(tmp_path / "full"), training_record(tmp_path / "cut")
    assert [e["step"] for e in cut["epochs"]] == [6, 12]
    for key in ("train_loss", "train_alpha"):
        assert [e[key] for e in cut["epochs"]] == pytest.approx([e[key] for e in full["epochs"]])
    assert cut["distillation"] == full["distillation"]


def test_resume_refuses_changed_distillation_options(corpus, dump, tmp_path, monkeypatch):
    args = ["--mapping", "constant", "--alpha", "0.5", *FAST, "--checkpoint-every", "2"]
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def crash_on_step_3(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_step_3)
    assert run("distill", corpus.path, dump, "--out", tmp_path / "cut", *args, "--temperature", "2").exit_code != 0
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    result = run("distill", corpus.path, dump, "--out", tmp_path / "cut", *args, "--temperature", "3", "--resume")
    last = result.output.splitlines()[-1]
    assert result.exit_code == 1 and last.startswith("error: ") and "temperature" in last, result.output


def test_a_dump_whose_labels_differ_from_the_corpus_is_refused(corpus, dump, tmp_path):
    relabelled = tiny_corpus(tmp_path / "relabelled", n_train=100, n_eval=24, rows_per_shard=40, row_group_rows=16,
                             seed=1)
    assert relabelled.fingerprint == corpus.fingerprint  # same ids and shards...
    assert relabelled.read_column("train", "label") != corpus.read_column("train", "label")  # ...other labels
    result = run("distill", relabelled.path, dump, "--out", tmp_path / "s", "--mapping", "constant", *FAST,
                 "--max-steps", "1")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "label" in result.output, result.output


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_calibrate_and_distill_warn_when_the_teachers_losses_carry_no_information(tmp_path):
    """Issue 17 (a newcomer's first hour): a teacher no better than chance is said, not silently used."""
    corpus = layout_corpus(tmp_path / "c", n_train=60, n_eval=8)
    run_dump(tmp_path / "d", corpus)  # a "teacher" of random logits: ROC AUC about 0.5 on its own rows
    result = ok("calibrate", tmp_path / "d")
    assert any("no better than chance: its losses carry no information" in w for w in warnings_of(result)), result.stderr
    result = run("distill", corpus.path, tmp_path / "d", "--out", tmp_path / "s", "--mapping", "tanh", *FAST)
    assert any("no better than chance" in w for w in warnings_of(result)), result.stderr


@pytest.mark.parametrize("confidence", ["entropy", "margin"])
def test_distill_reads_alpha_from_a_label_free_signal(corpus, dump, tmp_path, confidence):
    """--confidence entropy|margin: calibrated from the signal's quantiles (calibrate prints the same
    parameters), alpha of each row from its stored logits alone (the alpha log holds the signal), and
    the record says which signal."""
    from cpfd.student.cpfd import alpha_from_loss, confidence_signal
    from cpfd.storage.dump import read_dump_columns

    shown = ok("calibrate", dump, "--mapping", "exp-decay", "--confidence", confidence, "--json").stdout
    calibrated = json.loads(shown)["params"]["exp-decay"]
    out, log = tmp_path / "s", tmp_path / "alpha.parquet"
    ok("distill", corpus.path, dump, "--out", out, "--mapping", "exp-decay", "--confidence", confidence,
       "--alpha-log", log, *FAST)
    record = json.loads((out / "training.json").read_text())["distillation"]
    assert record["confidence"] == confidence and record["params"] == pytest.approx(calibrated)
    table = pq.read_table(log)
    assert table.column_names == ["sample_id", "teacher_loss", "confidence", "alpha"]
    rows = read_dump_columns(dump, ["logits"])
    logits = np.asarray(rows.column("logits").combine_chunks().flatten().to_numpy()).reshape(rows.num_rows, -1)
    signal = confidence_signal(confidence, None, logits)
    assert np.allclose(table.column("confidence").to_numpy(), signal, atol=1e-6)
    assert np.allclose(table.column("alpha").to_numpy(), alpha_from_loss(signal, "exp-decay", **record["params"]), atol=1e-6)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert lines and all(0.1 - 1e-3 <= line["alpha_mean"] <= 0.9 + 1e-3 for line in lines)
