"""experiment/run.py: `cpfd experiment` end to end on very small corpora, every table, figure and
comparison of its report, and the numbers."""

import json

import pytest

from tests.factories import tiny_corpus
from tests.invoke import FAST, refused, run

ARGS = ["--preset", "task4", "--train-samples", "96", "--eval-samples", "64", "--mappings", "threshold,exp-decay",
        "--temperatures", "1,2", "--seeds", "2", "--bootstrap", "200", "--jobs", "1", *FAST]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    result = run("experiment", "--out", out, *ARGS)
    assert result.exit_code == 0, result.output
    return out


def test_every_table_figure_and_comparison_is_there(experiment):
    report = (experiment / "report.md").read_text()
    for heading in ("Table 3", "What the data showed", "Table 6", "Table 7", "Table 1", "Table 5", "Table 4", "Figure 5",
                    "Training curves (seed 0)"):
        assert f"## {heading}" in report, heading
    for figure in ("fig_teacher_loss.png", "fig_alpha.png", "fig_training.png"):
        data = (experiment / figure).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert "fingerprint" in report and "cpfd experiment --out" in report  # what produced it
    assert "ceiling" in report  # a synthetic corpus knows the student's ceiling
    full = json.loads((experiment / "report.json").read_text())
    tables = full["tables"]
    assert {"table1", "table3", "table4", "table5", "table6", "table7"} <= set(tables)
    assert set(tables["table6"]) == {"threshold", "exp-decay"} and set(tables["table7"]) == {"1", "2"}
    assert tables["table4"]["dense_features_needed"] == {"teacher": 29, "student": 3}  # the student reads 3 features
    exported = tables["table4"]["student_onnx"]  # the exported student, timed on the same rows
    assert exported["ms_per_video_batch1"] > 0 and exported["parity_max_abs_diff_probs"] <= 1e-4
    assert "the student exported (`cpfd export`), onnxruntime CPU" in report
    assert tables["table1"][0]["groups"] == ["negative", "positive", "overall"]  # the corpus's class names


def test_the_report_reads_right(experiment):
    """A verdict line in the statistics' words; F1@0.5 marked and never bold; no gap closed on noise;
    latencies with their spread."""
    report = (experiment / "report.md").read_text()
    full = json.loads((experiment / "report.json").read_text())
    head = report.split("## Table 3")[0]
    assert full["verdict"] in head and full["verdict"].startswith("**Verdict")
    table3 = report.split("## Table 3")[1].split("## What the data showed")[0]
    rows = [line for line in table3.splitlines() if line.startswith("| ")]
    assert rows[0].endswith("| F1@0.5 (not the decision metric) |")
    assert all("**" not in line.split("|")[-2] for line in rows[2:])  # the F1@0.5 column is never bold
    called = {c["a"]: c["metrics"] for c in full["comparisons"].values() if c["b"] == "baseline"}
    gaps = [line for line in table3.split("Gap closed")[1].splitlines() if line.startswith("| ") and "%" in line]
    for line in gaps:  # a percentage only where the comparison with X-VLM is resolved
        name, *cells = [c.strip() for c in line.strip("|").split("|")]
        for metric, cell in zip(("roc_auc", "pr_auc", "f1_val"), cells):
            assert ("%" in cell) <= (called[name][metric]["verdict"] in ("better", "worse")), (name, metric)
    assert "(rows only)" not in report  # one seed is never called better
    latency = full["tables"]["table4"]["student"]
    low, high = latency["ms_per_video_batch1_range"]
    assert low <= latency["ms_per_video_batch1"] <= high and f"({low:.2f}-{high:.2f})" in report


def test_each_comparison_has_per_seed_differences_intervals_and_a_verdict(experiment):
    report = json.loads((experiment / "report.json").read_text())
    comparisons = report["comparisons"]
    assert {"PFD vs X-VLM", "CPFD vs X-VLM", "CPFD vs PFD", "CPFD vs PFD at its mean alpha"} <= set(comparisons)
    for found in comparisons.values():
        for metric in ("roc_auc", "pr_auc", "f1"):
            m = found["metrics"][metric]
            assert len(m["differences"]) == 2 and m["verdict"] in ("better", "worse", "inconclusive")
            assert m["seeds"]["interval"] is not None and m["rows"]["interval"] is not None
    lines = [line for line in (experiment / "report.md").read_text().splitlines() if line.startswith("- CPFD vs PFD")]
    assert lines and "[seeds" in lines[0] and "rows" in lines[0]


def test_report_numbers_are_the_ones_evaluate_wrote(experiment):
    report = json.loads((experiment / "report.json").read_text())
    for seed in ("0", "1"):
        eval_dir = experiment / f"seed-{seed}" / "eval"
        for name, metrics in report["results"][seed].items():
            same = metrics.get("distillation", {}).get("same_as", name)
            written = json.loads((eval_dir / f"{same}.json").read_text())
            for key in ("roc_auc", "pr_auc", "f1", "f1_at_val_threshold"):
                assert metrics.get(key) == written.get(key), (name, key)
    t3 = report["tables"]["table3"]["models"]
    assert t3["X-VLM"]["f1_val"]["values"] == [report["results"][s]["baseline"]["f1_at_val_threshold"] for s in ("0", "1")]
    # and evaluate run by hand on a model folder agrees with the report
    result = run("evaluate", experiment / "seed-0" / "cpfd-exp-decay", experiment / "corpus", "--json", "--quiet")
    assert json.loads(result.stdout)["pr_auc"] == pytest.approx(  # recomputed logits: float rounding only
        report["results"]["0"]["cpfd-exp-decay"]["pr_auc"], abs=1e-4)


def test_matched_pfd_uses_the_mean_alpha_and_is_not_pfd_trained_twice(experiment):
    report = json.loads((experiment / "report.json").read_text())
    run0 = report["results"]["0"]
    matched = json.loads((experiment / "seed-0" / "pfd-exp-decay" / "training.json").read_text())["distillation"]
    assert matched["mapping"] == "constant"
    assert matched["params"]["alpha"] == pytest.approx(run0["cpfd-exp-decay"]["distillation"]["mean_alpha"], abs=1e-6)
    # threshold at the median loss: mean alpha 0.5, which is vanilla PFD
    assert run0["pfd-threshold"]["distillation"]["same_as"] == "pfd"
    assert not (experiment / "seed-0" / "pfd-threshold").exists()
    assert report["tables"]["table6"]["threshold"]["pfd_matched_is_pfd"]


def test_a_rerun_reuses_finished_steps_and_says_so(experiment):
    record = experiment / "seed-0" / "teacher" / "training.json"
    before = record.stat().st_mtime_ns
    result = run("experiment", "--out", experiment, *ARGS)
    assert result.exit_code == 0, result.output
    assert record.stat().st_mtime_ns == before
    assert "seed-0: train teacher (reused)" in result.stderr


def test_a_rerun_with_other_settings_is_refused_with_a_short_diff(experiment):
    refused("experiment", "--out", experiment, *ARGS, "--epochs", "2",
            message="train_options.epochs 1 -> 2")


def test_synthetic_options_with_a_corpus_are_refused(corpus, tmp_path):
    refused("experiment", "--out", tmp_path / "x", "--corpus", corpus.path, "--train-samples", "10", "--preset", "task3",
            message="--preset, --train-samples describe the synthetic corpus, which --corpus replaces")


def test_a_users_tabular_corpus(tmp_path):
    corpus = tiny_corpus(tmp_path / "tabular", frames=False, text=False, n_train=80, n_eval=48)
    out = tmp_path / "run"
    result = run("experiment", "--out", out, "--corpus", corpus.path, "--mappings", "neg-sigmoid",
                 "--primary-mapping", "neg-sigmoid", "--no-matched-pfd", "--bootstrap", "100", "--jobs", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert "## Table 3" in (out / "report.md").read_text()
    assert not (out / "corpus").exists()  # the user's corpus is used where it is


def test_cross_fitting_adds_its_dumps_models_and_comparisons(tmp_path):
    out = tmp_path / "cf"
    result = run("experiment", "--out", out, "--preset", "task2", "--train-samples", "120", "--eval-samples", "48",
                 "--mappings", "exp-decay", "--cross-fit", "2", "--bootstrap", "100", "--jobs", "1", *FAST)
    assert result.exit_code == 0, result.output
    seed = out / "seed-0"
    assert (seed / "teacher-cf" / "folds.json").exists() and (seed / "dump-cf" / "_manifest.json").exists()
    assert {"pfd-cf", "cpfd-exp-decay-cf", "pfd-exp-decay-cf"} <= {p.name for p in seed.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert "cross-fitted CPFD vs in-sample CPFD" in report["comparisons"]
    losses = report["tables"]["crossfit_train_loss"]
    assert len(losses) == 2 and all("negative, label flipped" in v for v in losses.values())  # the truth file's flips
    assert (out / "fig_teacher_loss_crossfit.png").read_bytes().startswith(b"\x89PNG")
    assert "## Cross-fitted teacher" in (out / "report.md").read_text()


def test_bad_options_are_one_line_errors(tmp_path):
    refused("experiment", "--out", tmp_path / "x", "--mappings", "threshold,sigmoid", message="sigmoid")
    result = run("experiment", "--out", tmp_path / "x", "--temperatures", "1,abc")
    assert result.exit_code == 2
    plain = tiny_corpus(tmp_path / "plain", privileged=False)
    refused("experiment", "--out", tmp_path / "y", "--corpus", plain.path, *FAST, message="no privileged features")
    refused("experiment", "--out", tmp_path / "z", "--cross-fit", "1", message="--cross-fit must be 0")


def test_confidence_arms_and_the_generator_knobs(tmp_path):
    """--confidences loss,entropy: CPFD on the entropy signal and PFD at its mean alpha, beside CPFD on
    the loss, compared with the same paired statistics; the corpus drawn with --label-noise and
    --privileged-missing, recorded in experiment.json."""
    out = tmp_path / "conf"
    result = run("experiment", "--out", out, "--preset", "task4", "--train-samples", "96", "--eval-samples", "48",
                 "--mappings", "exp-decay", "--confidences", "loss,entropy", "--label-noise", "0.1",
                 "--privileged-missing", "0.3", "--bootstrap", "100", "--jobs", "1", *FAST)
    assert result.exit_code == 0, result.output
    seed = out / "seed-0"
    record = json.loads((seed / "cpfd-exp-decay-entropy" / "training.json").read_text())["distillation"]
    assert record["confidence"] == "entropy" and record["mapping"] == "exp-decay"
    report = json.loads((out / "report.json").read_text())
    assert {"CPFD (entropy) vs PFD at its mean alpha", "CPFD (entropy) vs CPFD (loss)",
            "CPFD (entropy) vs PFD"} <= set(report["comparisons"])
    matched = report["results"]["0"]["pfd-exp-decay-entropy"]["distillation"]
    entropy_arm = report["results"]["0"]["cpfd-exp-decay-entropy"]["distillation"]
    if "same_as" not in matched:  # PFD at the entropy arm's mean alpha
        assert matched["params"]["alpha"] == pytest.approx(entropy_arm["mean_alpha"], abs=1e-6)
    assert set(report["tables"]["confidence_signals"]) == {"loss", "entropy"}
    assert "## CPFD (exp-decay) by confidence signal" in (out / "report.md").read_text()
    settings = json.loads((out / "experiment.json").read_text())["corpus"]
    assert settings["label_noise"] == 0.1 and settings["privileged_missing"] == 0.3
    refused("experiment", "--out", tmp_path / "x", "--confidences", "entropy", *FAST, message="must include loss")
