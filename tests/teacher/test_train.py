"""teacher/train.py: `cpfd train-teacher` refuses a corpus without privileged features. (What a teacher
folder holds, and the training loop both stages share: tests/pipeline/test_train.py.)"""

from tests.factories import tiny_corpus
from tests.invoke import FAST, run


def test_teacher_needs_privileged_features(tmp_path):
    plain = tiny_corpus(tmp_path / "plain", privileged=False)
    result = run("train-teacher", plain.path, "--out", tmp_path / "t", *FAST)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "no privileged features" in result.output
    assert not (tmp_path / "t" / "config.json").exists()
