"""storage/model_folder.py: loading a model folder that is missing, corrupt, of another shape or of
the other architecture is one CpfdError line naming the file (through `from_pretrained`)."""

import json

import numpy as np
import pytest

from cpfd.student.xvlm import XVLMForClassification
from cpfd.teacher.df_xvlm import DFXVLMForClassification
from tests.factories import tiny_student, tiny_teacher
from tests.invoke import assert_one_line_error


@pytest.fixture
def saved_student(tmp_path):
    folder = tmp_path / "student"
    tiny_student().save_pretrained(folder)
    return folder


def test_loading_a_missing_folder_or_config_is_a_cpfd_error(saved_student, tmp_path):
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(tmp_path / "nope"), "not found")
    (saved_student / "config.json").unlink()
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student), "config.json", "missing")


def test_loading_a_corrupt_config_is_a_cpfd_error(saved_student):
    (saved_student / "config.json").write_text("{not json")
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student), "config.json", "JSON")


def test_loading_without_weights_is_a_cpfd_error(saved_student):
    (saved_student / "model.safetensors").unlink()
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                          "model.safetensors", "missing")


def test_loading_random_bytes_as_weights_is_a_cpfd_error(saved_student):
    (saved_student / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                          "model.safetensors", "not a readable safetensors file")


def test_loading_weights_that_do_not_match_the_config_is_a_cpfd_error(saved_student, tmp_path):
    other = tmp_path / "other"
    tiny_student(num_classes=5).save_pretrained(other)
    (saved_student / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    message = assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                                    "model.safetensors", "do not match config.json")
    assert "2 of another shape (e.g. head.mlp.3.bias is [5] in the file, [3] in config.json)" in message
    tiny_student(frames=0).save_pretrained(other)  # same head, no vision encoder: tensors missing
    (saved_student / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student), "missing")


def test_loading_a_folder_with_the_other_architecture_is_a_cpfd_error(saved_student, tmp_path):
    assert_one_line_error(lambda: DFXVLMForClassification.from_pretrained(saved_student),
                          "config.json", "'X-VLM'", "'DF-X-VLM'")
    tiny_teacher().save_pretrained(tmp_path / "teacher")
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(tmp_path / "teacher"),
                          "config.json", "'DF-X-VLM'")


def test_loading_a_config_with_bad_values_is_a_cpfd_error(saved_student):
    path = saved_student / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "feature_mean": [0.0]}))
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                          "config.json", "cannot build the model")


