"""Tokenization of the text inputs: a WordPiece tokenizer trained on the corpus, or a pretrained one.

Title and OCR text are encoded as one BERT pair, `[CLS] title [SEP] ocr [SEP]`, padded and truncated
to a fixed length, so every batch of `input_ids` / `attention_mask` has shape (B, max_length).
A model folder keeps its tokenizer in `tokenizer/` (`save_tokenizer` / `load_tokenizer`); a
pretrained text encoder (e.g. all-MiniLM-L6-v2) brings its own, loaded from its folder.

    tokenizer = train_wordpiece_tokenizer(titles + ocr_texts, vocab_size=2000)
    arrays = encode_text(tokenizer, titles, ocr_texts, max_length=32)   # int64 numpy arrays

Everything is offline: nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cpfd.storage.errors import CpfdError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] gets id 0, as BERT expects


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A lowercasing BERT-style WordPiece tokenizer trained on `texts`; same texts -> same vocabulary.

    Empty strings and None are skipped; at least one text must be non-empty.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"expected vocab_size > {len(SPECIAL_TOKENS)}, got {vocab_size}")
    texts = [text for text in texts if text]
    if not texts:
        raise CpfdError("cannot train a tokenizer: every title and OCR text in the training split is empty")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer numbers the "##x" continuation tokens in hash-map order, and those numbers break ties
    # between merges, so two runs can learn different vocabularies (huggingface/tokenizers#1794).
    # Handing them over, sorted, with the special tokens fixes their ids and makes training repeatable.
    continuations = sorted({"##" + char for text in texts
                            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
                            for char in word[1:]})
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + continuations,
                                        show_progress=False)
    draft = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    draft.normalizer, draft.pre_tokenizer = normalizer, pre_tokenizer
    draft.train_from_iterator(texts, trainer=trainer)

    # Rebuild from the learned vocabulary so that only the real special tokens are special.
    tokenizer = Tokenizer(models.WordPiece(vocab=draft.get_vocab(), unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> None:
    """Write the tokenizer files (tokenizer.json, tokenizer_config.json, ...) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """A tokenizer from a local folder (ours, or a pretrained model's), offline."""
    if not os.path.isdir(path):
        raise CpfdError(f"{path}: tokenizer folder not found")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise CpfdError(f"{path}: cannot load the tokenizer ({' '.join(str(error).split())})") from None


def encode_text(tokenizer: PreTrainedTokenizerFast, titles: list[str], ocr_texts: list[str],
                max_length: int = 32) -> dict[str, np.ndarray]:
    """`[CLS] title [SEP] ocr [SEP]` per sample -> int64 arrays input_ids, attention_mask of (N, max_length).

    Missing text (None) counts as empty. Truncation takes tokens from the longer of the two first.
    """
    if len(titles) != len(ocr_texts):
        raise ValueError(f"expected as many titles as OCR texts, got {len(titles)} and {len(ocr_texts)}")
    if max_length < 3:
        raise ValueError(f"expected max_length >= 3 ([CLS] and two [SEP]), got {max_length}")
    if not titles:
        empty = np.zeros((0, max_length), dtype=np.int64)
        return {"input_ids": empty, "attention_mask": empty.copy()}
    encoded = tokenizer([t or "" for t in titles], [t or "" for t in ocr_texts], padding="max_length",
                        truncation="longest_first", max_length=max_length, return_tensors="np",
                        return_token_type_ids=False)
    return {key: encoded[key].astype(np.int64) for key in ("input_ids", "attention_mask")}
