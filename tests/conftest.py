"""Shared pytest set-up: the repo root on sys.path for `tests.*` helpers (cpfd itself is the installed
package), one intra-op thread, and the fixtures several test folders share, built once a session.

    corpus -> teacher -> dump
           -> student

`corpus` is a tiny corpus (`tests.factories.tiny_corpus`) of 100 train rows in three shards of 40,
40 and 20 rows (row groups of at most 16: [16, 16, 8], [16, 16, 8], [16, 4]) and one eval shard of
24 rows, with frames, text, two privileged features and one feature. `teacher` is a DF-X-VLM trained
on it for one epoch (`tests.invoke.FAST`), `student` an X-VLM trained for two, `dump` the teacher's
dump of the train split in batches of 8.

They are read-only: a test that writes into one of these folders (a resume, an overwrite, a damaged
file) copies it to its own tmp_path first. Each is checked at the end of the session: a file
changed, added or removed in it is an error (of the last test that used it). A module that needs a corpus of another shape (other
sizes, no text, other row groups) builds its own under another name, or defines its own `corpus`
fixture, which then overrides this one in that module (and must not be mixed with `teacher`,
`dump` or `student`, which are built on this one).
"""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.factories import tiny_corpus  # noqa: E402
from tests.invoke import FAST, ok  # noqa: E402

# The test models are tiny: one intra-op thread is faster than two on a 2-core machine (thread
# hand-offs cost more than the matrix work) and keeps timings stable when the machine is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts with one intra-op thread, whatever a command run in-process before it set
    (`cpfd experiment` sets its own)."""
    torch.set_num_threads(1)


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_only(folder: Path, value):
    """Yield `value`; afterwards, fail if a file under `folder` was changed, added or removed."""
    before = digests(folder)
    yield value
    after = digests(folder)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"a test wrote into the shared {folder}: {changed[:5]}"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    corpus = tiny_corpus(tmp_path_factory.mktemp("shared") / "corpus", n_train=100, n_eval=24,
                         rows_per_shard=40, row_group_rows=16)
    yield from read_only(corpus.path, corpus)


@pytest.fixture(scope="session")
def teacher(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shared") / "teacher"
    ok("train-teacher", corpus.path, "--out", out, *FAST)
    yield from read_only(out, out)


@pytest.fixture(scope="session")
def student(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shared") / "student"
    ok("train-student", corpus.path, "--out", out, *FAST, "--epochs", "2")
    yield from read_only(out, out)


@pytest.fixture(scope="session")
def dump(corpus, teacher, tmp_path_factory):
    """The teacher's dump of the train split. It is made by a copy of `teacher` (the same weights)
    that is deleted afterwards: the teacher folder the dump's manifest names is gone, so a test of
    the student stage shows it needs the corpus and the dump alone (tests/student/test_distill.py)."""
    root = tmp_path_factory.mktemp("shared")
    dumped_by = root / "deleted-teacher"
    shutil.copytree(teacher, dumped_by)
    ok("dump-teacher", dumped_by, corpus.path, "--out", root / "dump", "--batch-size", "8", "--quiet")
    shutil.rmtree(dumped_by)
    yield from read_only(root / "dump", root / "dump")
