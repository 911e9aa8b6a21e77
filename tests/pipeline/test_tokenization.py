"""pipeline/tokenization.py: the WordPiece tokenizer trained on a corpus's text: encoding pairs,
determinism, the saved folder, refusals."""

import numpy as np
import pytest

from cpfd.pipeline.tokenization import encode_text, load_tokenizer, save_tokenizer, train_wordpiece_tokenizer
from cpfd.storage.errors import CpfdError


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
