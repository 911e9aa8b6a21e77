"""teacher/df_xvlm.py: the DF-X-VLM teacher's shapes, gradients, privileged features and save/load
round trip (tiny configs: hidden 32, 2 layers, tests/factories.py)."""

import json
import math

import pytest
import torch

from cpfd.teacher.df_xvlm import DFXVLMForClassification
from tests.factories import MODEL_INPUTS, model_batch, same_state, tiny_teacher


@pytest.mark.parametrize("inputs", MODEL_INPUTS.values(), ids=MODEL_INPUTS.keys())
def test_teacher_forward_and_backward(inputs):
    model = tiny_teacher(**inputs)
    batch = model_batch(model.config)
    out = model(batch)
    assert out.logits.shape == (2, 3)
    assert out.pooled.shape == (2, model.encoder.output_size + 16)
    torch.nn.functional.cross_entropy(out.logits, batch["labels"]).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_teacher_logits_depend_on_privileged_features_and_survive_nan():
    model = tiny_teacher(frames=2, text=True).eval()
    batch = model_batch(model.config)
    with torch.no_grad():
        base = model(batch).logits
        changed = model({**batch, "privileged": batch["privileged"] + 3.0}).logits
        missing = model({**batch, "privileged": torch.full_like(batch["privileged"], math.nan)}).logits
    assert not torch.allclose(base, changed)
    assert torch.isfinite(missing).all()
    with pytest.raises(ValueError, match="privileged"):
        model({k: v for k, v in batch.items() if k != "privileged"})


def test_teacher_save_load_round_trip_gives_identical_logits(tmp_path):
    model = tiny_teacher(frames=2, text=True, features=2).eval()
    batch = model_batch(model.config)
    model.save_pretrained(tmp_path)
    loaded = DFXVLMForClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.privileged_features == ["p0", "p1", "p2"]
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == "DF-X-VLM"
    assert same_state(model, loaded)  # the weights come back bit for bit
    with torch.no_grad():  # logits from two calls: equal within float32 rounding (docs/method.md)
        assert torch.allclose(model(batch).logits, loaded(batch).logits, rtol=1e-5, atol=1e-6)


def test_teacher_needs_privileged_features():
    with pytest.raises(ValueError, match="privileged"):
        tiny_teacher(privileged=0)


