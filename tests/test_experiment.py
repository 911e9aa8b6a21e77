"""`cpfd experiment` end to end on very small corpora: every table and figure, and the numbers."""

import json

import pytest

from tests.factories import tiny_corpus
from tests.invoke import FAST, run



@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    result = run("experiment", "--out", out, "--preset", "task4", "--train-samples", "96", "--eval-samples", "64",
                 "--mappings", "threshold,exp-decay", "--temperatures", "1,2", *FAST)
    assert result.exit_code == 0, result.output
    return out


def test_every_table_and_figure_is_there(experiment):
    report = (experiment / "report.md").read_text()
    for heading in ("Table 3", "Table 6", "Table 7", "Table 1", "Table 5", "Table 4", "Figure 5"):
        assert f"## {heading}" in report, heading
    for figure in ("fig_teacher_loss.png", "fig_alpha.png"):
        data = (experiment / figure).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert "fingerprint" in report and "cpfd experiment --out" in report  # what produced it
    tables = json.loads((experiment / "report.json").read_text())["tables"]
    assert set(tables) == {"table1", "table3", "table4", "table5", "table6", "table7"}
    assert set(tables["table6"]) == {"threshold", "exp-decay"} and set(tables["table7"]) == {"1", "2"}
    assert tables["table4"]["dense_features_needed"]["student"] == 0
    assert tables["table4"]["dense_features_needed"]["teacher"] > 0


def test_report_numbers_are_the_ones_evaluate_wrote(experiment):
    report = json.loads((experiment / "report.json").read_text())
    seed_dir = experiment / "seed-0"
    for name, metrics in report["results"]["0"].items():
        written = json.loads((seed_dir / "eval" / f"{name}.json").read_text())
        for key in ("roc_auc", "pr_auc", "f1", "best_f1"):
            assert metrics[key] == written[key], (name, key)
    t3 = report["tables"]["table3"]["models"]
    assert t3["X-VLM"]["roc_auc"]["values"] == [json.loads((seed_dir / "eval" / "baseline.json").read_text())["roc_auc"]]
    # and evaluate run by hand on a model folder agrees with the report
    result = run("evaluate", seed_dir / "cpfd-exp-decay", experiment / "corpus", "--json", "--quiet")
    assert json.loads(result.output)["pr_auc"] == pytest.approx(  # recomputed logits: float rounding only
        report["tables"]["table3"]["models"]["CPFD-X-VLM (exp-decay)"]["pr_auc"]["mean"], abs=1e-4)


def test_matched_pfd_uses_the_mean_alpha_of_its_mapping(experiment):
    report = json.loads((experiment / "report.json").read_text())
    for mapping in ("threshold", "exp-decay"):
        cpfd_run = report["results"]["0"][f"cpfd-{mapping}"]["distillation"]
        matched = json.loads((experiment / "seed-0" / f"pfd-{mapping}" / "training.json").read_text())["distillation"]
        assert matched["mapping"] == "constant"
        assert matched["params"]["alpha"] == pytest.approx(cpfd_run["mean_alpha"], abs=1e-6)


def test_rerun_reuses_finished_steps(experiment):
    record = experiment / "seed-0" / "teacher" / "training.json"
    before = record.stat().st_mtime_ns
    result = run("experiment", "--out", experiment, "--preset", "task4", "--train-samples", "96", "--eval-samples", "64",
                 "--mappings", "threshold,exp-decay", "--temperatures", "1,2", *FAST)
    assert result.exit_code == 0, result.output
    assert record.stat().st_mtime_ns == before


def test_a_users_tabular_corpus(tmp_path):
    corpus = tiny_corpus(tmp_path / "tabular", frames=False, text=False, n_train=80, n_eval=48)
    out = tmp_path / "run"
    result = run("experiment", "--out", out, "--corpus", corpus.path, "--mappings", "neg-sigmoid",
                 "--primary-mapping", "neg-sigmoid", "--no-matched-pfd", *FAST)
    assert result.exit_code == 0, result.output
    assert "## Table 3" in (out / "report.md").read_text()
    assert not (out / "corpus").exists()  # the user's corpus is used where it is


def test_bad_options_are_one_line_errors(tmp_path):
    result = run("experiment", "--out", tmp_path / "x", "--mappings", "threshold,sigmoid")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "sigmoid" in result.output
    result = run("experiment", "--out", tmp_path / "x", "--temperatures", "1,abc")
    assert result.exit_code == 2
    plain = tiny_corpus(tmp_path / "plain", privileged=False)
    result = run("experiment", "--out", tmp_path / "y", "--corpus", plain.path, *FAST)
    assert result.exit_code == 1 and "no privileged features" in result.output


def test_rerun_with_other_settings_is_refused(experiment):
    result = run("experiment", "--out", experiment, "--preset", "task4", "--train-samples", "96", "--eval-samples", "64",
                 "--mappings", "threshold,exp-decay", *FAST, "--epochs", "2")
    assert result.exit_code == 1 and "holds an experiment run with other settings" in result.output
    assert "train_options" in result.output
