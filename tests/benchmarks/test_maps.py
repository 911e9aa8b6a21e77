"""benchmarks/maps.py's summary: the tables and the list of points where CPFD is ahead of PFD that
docs/results.md quotes. Built from hand-made report summaries, so every case is known."""

import importlib.util
from pathlib import Path

import pytest

MAPS = Path(__file__).resolve().parents[2] / "benchmarks" / "maps.py"


@pytest.fixture(scope="module")
def maps():
    spec = importlib.util.spec_from_file_location("maps_under_test", MAPS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gain(mean, seeds, rows, verdict="inconclusive"):
    return {"mean": mean, "seed_interval": seeds, "row_interval": rows, "verdict": verdict}


def point(cpfd_vs_pfd: dict) -> dict:
    models = {"X-VLM": {"roc_auc": (0.65, 0.01)}, "DF-X-VLM (teacher)": {"roc_auc": (0.92, 0.0)}}
    return {"models": models, "gains": {"PFD vs X-VLM": {"roc_auc": gain(0.03, [-0.01, 0.07], [0.01, 0.05])},
                                        "CPFD vs PFD": cpfd_vs_pfd}}


def summary(maps, size_points: dict, alpha: dict | None = None) -> dict:
    return {"presets": {p: None for p in maps.PRESETS},
            "strength": {story: {f"{s:g}": None for s in maps.STRENGTHS} for story in maps.STORIES},
            "size": {str(n): size_points.get(n) for n in maps.SIZES}, "alpha": alpha or {}}


def test_cpfd_ahead_lists_intervals_above_zero_and_nothing_else(maps):
    s = summary(maps, {
        500: point({"roc_auc": gain(0.02, [-0.05, 0.09], [0.004, 0.04])}),      # rows above 0
        1000: point({"pr_auc": gain(0.03, [0.01, 0.05], [0.002, 0.06], "better")}),  # both above 0
        2000: point({"roc_auc": gain(-0.02, [-0.09, -0.01], [-0.04, -0.001], "worse")}),  # below 0
        5000: point({"f1": gain(0.01, None, [-0.01, 0.03])}),                     # spans 0, no seed interval
    })
    ahead = maps.cpfd_ahead(s)
    assert len(ahead) == 2, ahead
    assert ahead[0].startswith("- 500 training videos, CPFD vs PFD, roc_auc") and ahead[0].endswith("(above 0 over rows)")
    assert ahead[1].startswith("- 1000 training videos, CPFD vs PFD, pr_auc")
    assert ahead[1].endswith("(above 0 over seeds and rows)") and "**better**" in ahead[1]


def test_cpfd_ahead_reads_the_alpha_sweep_and_says_when_nothing_is(maps):
    sweep = {"0.9": {"CPFD vs PFD at the same mean alpha": {"f1": gain(0.03, [-0.01, 0.06], [0.01, 0.05])}}}
    assert maps.cpfd_ahead(summary(maps, {}, sweep)) == [
        "- alpha sweep at 0.9, CPFD vs PFD at the same mean alpha, f1: +0.0300 [-0.010, +0.060] [+0.010, +0.050] "
        "inconclusive (above 0 over rows)"]
    assert maps.cpfd_ahead(summary(maps, {})) == ["- nowhere among the points that have run"]


def test_the_markdown_marks_points_not_run_and_formats_the_ones_that_did(maps):
    text = maps.summary_markdown(summary(maps, {2000: point({"roc_auc": gain(-0.0119, [-0.098, 0.074], [-0.03, 0.007])})}))
    size = text[text.index("### Training-set size"):text.index("### PFD's alpha swept")]
    assert "| 500 | not run |" in size
    assert ("| 2000 | 0.6500 | 0.9200 | +0.0300 [-0.010, +0.070] [+0.010, +0.050] inconclusive | - | "
            "-0.0119 [-0.098, +0.074] [-0.030, +0.007] inconclusive |") in size


@pytest.mark.parametrize("seeds, rows, mark", [
    ([-0.05, 0.09], [0.004, 0.04], "*"),        # rows above 0
    ([-0.09, -0.01], [-0.04, -0.001], "**"),    # both below 0
    ([0.01, 0.05], [-0.002, 0.06], "+"),        # seeds alone
    ([-0.01, 0.07], [-0.01, 0.05], ""),         # neither
    (None, [0.0, 0.05], ""),                    # one seed: no interval; a bound at 0 does not exclude it
])
def test_the_confidence_grid_marks_what_each_interval_resolves(maps, seeds, rows, mark):
    assert maps.resolved_mark(gain(0.01, seeds, rows)) == mark


def test_the_confidence_grid_draws_the_cells_that_ran_and_greys_the_rest(maps, tmp_path):
    cells = {f"{n:g}/{m:g}": None for n in maps.LABEL_NOISE for m in maps.MISSING}
    labels = [label for columns in maps.CONFIDENCE_COLUMNS.values() for _, label in columns]
    cells["0.1/0"] = {"models": {}, "gains": {label: {"roc_auc": gain(0.02, [-0.01, 0.05], [0.01, 0.03])}
                                              for label in labels}}
    maps.confidence_grid_figure(tmp_path / "grid.png", {"confidence": cells})
    assert (tmp_path / "grid.png").stat().st_size > 0
    maps.confidence_grid_figure(tmp_path / "none.png", {"confidence": {k: None for k in cells}})
    assert not (tmp_path / "none.png").exists()  # nothing has run: no empty figure
