"""pipeline/stages.py: the warnings a training run starts with on small or one-class data (issue 17: a
newcomer's first hour)."""

from tests.factories import tiny_corpus
from tests.invoke import FAST, ok


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_training_a_handful_of_steps_or_on_a_one_class_split_says_so(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=24, n_eval=6, classes=("a", "b"), seed=4)
    result = ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST)
    said = warnings_of(result)
    assert any("training takes 2 optimizer steps" in w for w in said), said
    counts = corpus.label_counts("eval")
    if min(counts) == 0:
        assert any("the eval split holds one class" in w for w in said), said
    else:
        assert any("metrics on it swing with a single row" in w for w in said), said
