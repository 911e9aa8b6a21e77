"""X-VLM, the deployable student: video frames + text (+ non-privileged dense features) -> class logits.

The model follows X-VLM (Zeng et al.) at a small scale, as used in the CPFD paper (section 3.2, Fig. 1,
"X-VLM branch"):

- a vision encoder (any Hugging Face vision backbone, ViT by default) runs on every frame; a learned
  frame-position embedding is added to the patch tokens of each frame, and the frames are averaged at
  each patch position -> one set of vision tokens per video;
- a text encoder (BERT by default, or a local pretrained BERT folder such as all-MiniLM-L6-v2) reads
  `[CLS] title [SEP] ocr [SEP]`;
- fusion layers (self-attention over text, cross-attention from text to vision, FFN) and an MLP head on
  the fused first token. Without text a learned query token cross-attends to the vision tokens; without
  frames the fusion layers only self-attend;
- optional non-privileged dense `features` go through a `DenseFeatureBranch` whose output joins the
  fused token before the head. A corpus with only features (tabular) gets the branch and the head.

`XVLMEncoder` is everything up to the head; the teacher (`teacher/df_xvlm.py`, DF-X-VLM) reuses it and
adds a branch over the privileged features. This module never imports `teacher`.

Usage:

    config = XVLMConfig.build(num_classes=2, frames_per_video=4, image_size=32, has_text=True,
                              vocab_size=len(tokenizer), feature_names=[], feature_mean=[], feature_std=[],
                              max_length=32)  # encode_text(..., max_length=config.max_length)
    model = XVLMForClassification(config)
    out = model(batch)                 # batch: frames (B,F,H,W,3) uint8, input_ids/attention_mask (B,L)
    model.save_pretrained("model/")    # config.json + model.safetensors
    model = XVLMForClassification.from_pretrained("model/")

The model preprocesses raw uint8 frames itself (scale to [0, 1], normalize with mean 0.5 std 0.5), so
training and serving share one code path. Frames must already have the config's `image_size` (the
pipeline resizes); a pretrained vision backbone made for another size interpolates its position
embeddings. Text is tokenized to `config.max_length` tokens by `pipeline.tokenization.encode_text`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, ViTConfig

from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import describe_differences, load_model_folder, one_line, save_model_folder
from cpfd.pipeline.sizes import FUSION_LAYERS, HIDDEN_SIZE, MAX_LENGTH, NUM_HEADS, NUM_LAYERS, PATCH_SIZE, VOCAB_SIZE


# ----------------------------------------------------------------------------------------------
# Config


def vit_config_dict(image_size: int = 32, hidden: int = HIDDEN_SIZE, layers: int = NUM_LAYERS,
                    heads: int = NUM_HEADS, patch_size: int = PATCH_SIZE) -> dict[str, Any]:
    """A full Hugging Face ViT config dict (with `model_type`) for a freshly initialized backbone."""
    return ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden,
                     num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden).to_dict()


def bert_config_dict(vocab_size: int = VOCAB_SIZE, hidden: int = HIDDEN_SIZE, layers: int = NUM_LAYERS,
                     heads: int = NUM_HEADS, max_length: int = MAX_LENGTH) -> dict[str, Any]:
    """A full Hugging Face BERT config dict (with `model_type`) for a freshly initialized backbone."""
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=4 * hidden,
                      max_position_embeddings=max_length).to_dict()


def pretrained_config_dict(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The config dict of a local pretrained Hugging Face folder (offline), for `kind` "vision"/"text"."""
    if not Path(path).is_dir():
        raise CpfdError(f"{path}: pretrained {kind} model folder not found")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise CpfdError(f"{path}: not a local Hugging Face model folder for the {kind} encoder "
                        f"({one_line(error)})") from None
    if not hasattr(config, "hidden_size"):
        raise CpfdError(f"{path}: config.json of model_type '{config.model_type}' has no hidden_size; "
                        f"expected a single {kind} encoder (e.g. a ViT or BERT folder)")
    return config.to_dict()


@dataclass
class XVLMConfig:
    """Everything needed to rebuild an X-VLM; saved as `config.json` next to the weights."""

    architecture: str = "X-VLM"  # "DF-X-VLM" for the teacher; checked when a folder is loaded
    num_classes: int = 2
    classes: list[str] = field(default_factory=list)  # class names in label order; empty = unnamed
    frames_per_video: int = 4  # 0 = the corpus has no frames
    image_size: int = 32  # frames arrive as (image_size, image_size); the pipeline resizes
    has_text: bool = True
    # Tokens of "[CLS] title [SEP] ocr [SEP]": training and serving both pad / truncate to it.
    max_length: int = MAX_LENGTH
    # Full Hugging Face config dicts (with `model_type`): a saved folder rebuilds the backbones with
    # AutoConfig.for_model + AutoModel.from_config, without the pretrained folder it started from.
    vision_config: dict[str, Any] = field(default_factory=vit_config_dict)
    text_config: dict[str, Any] = field(default_factory=bert_config_dict)
    fusion_hidden: int = HIDDEN_SIZE
    fusion_layers: int = FUSION_LAYERS
    fusion_heads: int = NUM_HEADS
    # Non-privileged dense features (available when serving), with the training-split statistics
    # used to normalize them inside the model.
    feature_names: list[str] = field(default_factory=list)
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    feature_hidden: int = 32
    head_hidden: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"expected num_classes >= 2, got {self.num_classes}")
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(self.classes)}")
        if self.frames_per_video < 0:
            raise ValueError(f"expected frames_per_video >= 0, got {self.frames_per_video}")
        if self.frames_per_video and "model_type" not in self.vision_config:
            raise ValueError("expected vision_config with a 'model_type' when frames_per_video > 0")
        if self.has_text and "model_type" not in self.text_config:
            raise ValueError("expected text_config with a 'model_type' when has_text is true")
        sizes = (len(self.feature_names), len(self.feature_mean), len(self.feature_std))
        if len(set(sizes)) != 1:
            raise ValueError(f"expected feature_names, feature_mean, feature_std of one length, got {sizes}")
        if not (self.frames_per_video or self.has_text or self.feature_names):
            raise ValueError("expected frames, text or features: the config has no input")
        if self.fusion_hidden % self.fusion_heads:
            raise ValueError(f"expected fusion_hidden divisible by fusion_heads, "
                             f"got {self.fusion_hidden} and {self.fusion_heads}")

    @property
    def is_multimodal(self) -> bool:
        return bool(self.frames_per_video or self.has_text)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XVLMConfig:
        """The config a config.json holds: every field, of its type (save_pretrained writes them all)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - set(fields)), sorted(set(fields) - set(data))
        if unknown or missing:
            raise ValueError(f"unknown config fields {unknown}" if unknown else f"missing config fields {missing}")
        for name, value in data.items():
            if not _has_type(value, fields[name].type):
                raise ValueError(f"field '{name}' must be {fields[name].type}, got {value!r:.60}")
        return cls(**data)

    @classmethod
    def build(cls, num_classes: int, frames_per_video: int, image_size: int, has_text: bool,
              vocab_size: int | None, feature_names: list[str], feature_mean: list[float],
              feature_std: list[float], vision_model_path: str | os.PathLike | None = None,
              text_model_path: str | os.PathLike | None = None, classes: list[str] | None = None,
              hidden_size: int = HIDDEN_SIZE, num_layers: int = NUM_LAYERS, num_heads: int = NUM_HEADS,
              patch_size: int = PATCH_SIZE, max_length: int = MAX_LENGTH, fusion_layers: int = FUSION_LAYERS,
              feature_hidden: int = 32, head_hidden: int = 64, dropout: float | None = None) -> XVLMConfig:
        """A config for a corpus: backbones of the given sizes, or the configs of local pretrained folders.

        `hidden_size`, `num_layers`, `num_heads` size the fresh ViT and BERT; the fusion layers use
        `hidden_size` too (pretrained backbones of another width are projected to it). `vocab_size` is the
        tokenizer's size for a fresh BERT; with `text_model_path` the folder's vocabulary is used (the
        tokenizer must be that folder's) and `vocab_size` may be None. `dropout` None keeps the heads'
        0.1 and the backbones' own probabilities; a number sets all of them (0: no dropout anywhere).
        """
        vision_config: dict[str, Any] = {}
        if frames_per_video and vision_model_path is not None:
            vision_config = pretrained_config_dict(vision_model_path, "vision")
        elif frames_per_video:
            vision_config = vit_config_dict(image_size, hidden_size, num_layers, num_heads, patch_size)
        text_config: dict[str, Any] = {}
        if has_text and text_model_path is not None:
            text_config = pretrained_config_dict(text_model_path, "text")
            if vocab_size and vocab_size > text_config.get("vocab_size", vocab_size):
                raise CpfdError(f"{text_model_path}: the text model knows {text_config['vocab_size']} "
                                f"tokens but the tokenizer has {vocab_size}; use the folder's own tokenizer")
            if max_length > text_config.get("max_position_embeddings", max_length):
                raise CpfdError(f"{text_model_path}: the text model reads at most "
                                f"{text_config['max_position_embeddings']} tokens, max_length is {max_length}")
        elif has_text:
            if not vocab_size:
                raise ValueError(f"expected vocab_size > 0 for a freshly initialized text encoder, got {vocab_size}")
            text_config = bert_config_dict(vocab_size, hidden_size, num_layers, num_heads, max_length)
        if dropout is not None:
            vision_config, text_config = with_dropout(vision_config, dropout), with_dropout(text_config, dropout)
        return cls(num_classes=num_classes, classes=list(classes or []), frames_per_video=frames_per_video,
                   image_size=image_size, has_text=has_text, max_length=max_length,
                   vision_config=vision_config, text_config=text_config, fusion_hidden=hidden_size,
                   fusion_layers=fusion_layers, fusion_heads=num_heads, feature_names=list(feature_names),
                   feature_mean=[float(m) for m in feature_mean], feature_std=[float(s) for s in feature_std],
                   feature_hidden=feature_hidden, head_hidden=head_hidden, dropout=0.1 if dropout is None else dropout)


def with_dropout(config: dict[str, Any], p: float) -> dict[str, Any]:
    """A Hugging Face config dict with every dropout probability it names set to `p`."""
    return {k: (p if (k.endswith("dropout_prob") or k in ("dropout", "attention_dropout", "activation_dropout"))
                and isinstance(v, float) else v) for k, v in config.items()}


def _has_type(value: Any, annotation: str) -> bool:
    """`value` fits a config field's annotation (a string: this module uses postponed annotations)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith("dict"):
        return isinstance(value, dict)
    if annotation.startswith("list["):
        item = annotation[5:-1]
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    return True


# ----------------------------------------------------------------------------------------------
# Small blocks


def backbone_from_config(config: dict[str, Any]) -> nn.Module:
    """A freshly initialized Hugging Face backbone from a full config dict, without its pooler."""
    kwargs = dict(config)
    model_type = kwargs.pop("model_type")
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **kwargs))
    # The pooler is never used (we read the token states), and unused parameters break DDP.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


class DenseFeatureBranch(nn.Module):
    """Raw dense features (NaN = missing; infinities too) -> (B, hidden), normalized with stored statistics.

    A missing value becomes 0 after normalization (the mean) AND sets an explicit indicator, so the
    model can tell "missing" from "average". Used for `features` here and `privileged` in the teacher.
    """

    def __init__(self, mean: list[float], std: list[float], hidden: int, dropout: float):
        super().__init__()
        # Constant or unknown columns get std 1 instead of a division by ~0.
        std_tensor = torch.tensor(std, dtype=torch.float32)
        std_tensor = torch.where(torch.isfinite(std_tensor) & (std_tensor > 1e-6), std_tensor, 1.0)
        mean_tensor = torch.nan_to_num(torch.tensor(mean, dtype=torch.float32), nan=0.0)
        # Not persistent: config.json holds the statistics, the weights file holds parameters only.
        self.register_buffer("mean", mean_tensor, persistent=False)
        self.register_buffer("std", std_tensor, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * len(mean), hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if values.dim() != 2 or values.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected dense features of shape (B, {self.mean.shape[0]}), "
                             f"got {tuple(values.shape)}")
        missing = ~torch.isfinite(values)  # (B, D); an infinity would poison the MLP like a NaN
        normalized = torch.where(missing, 0.0, (values.float() - self.mean) / self.std)  # (B, D)
        return self.mlp(torch.cat([normalized, missing.float()], dim=-1))  # (B, hidden)


class FusionLayer(nn.Module):
    """One X-VLM cross-encoder layer (pre-LN): text self-attention, text->vision cross-attention, FFN.

    Built with `cross_attention=False` when there are no frames; then it only self-attends.
    """

    def __init__(self, hidden: int, heads: int, dropout: float, cross_attention: bool):
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden)
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden) if cross_attention else None
        self.cross_attn = (nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
                           if cross_attention else None)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * hidden, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None,
                vision: torch.Tensor | None) -> torch.Tensor:
        padding = None if text_mask is None else ~text_mask  # (B, L), True = ignore
        h = self.self_norm(text)  # (B, L, H)
        text = text + self.dropout(self.self_attn(h, h, h, key_padding_mask=padding, need_weights=False)[0])
        if self.cross_attn is not None:
            h = self.cross_norm(text)
            text = text + self.dropout(self.cross_attn(h, vision, vision, need_weights=False)[0])
        return text + self.dropout(self.ffn(self.ffn_norm(text)))  # (B, L, H)


class ClassificationHead(nn.Module):
    """MLP from a pooled representation to class logits."""

    def __init__(self, in_size: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_size, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)  # (B, C)


# ----------------------------------------------------------------------------------------------
# The encoder (shared with the teacher) and the model


@dataclass
class XVLMOutput:
    logits: torch.Tensor  # (B, C)
    pooled: torch.Tensor  # (B, H), the representation the head reads


class XVLMEncoder(nn.Module):
    """Frames + text (+ non-privileged features) -> pooled representation (B, output_size)."""

    def __init__(self, config: XVLMConfig):
        super().__init__()
        self.config = config
        width = config.fusion_hidden
        self.vision = backbone_from_config(config.vision_config) if config.frames_per_video else None
        self.text = backbone_from_config(config.text_config) if config.has_text else None
        if self.vision is not None:
            vision_width = self.vision.config.hidden_size
            self.frame_position = nn.Parameter(torch.randn(config.frames_per_video, vision_width) * 0.02)
            self.vision_proj = nn.Linear(vision_width, width) if vision_width != width else nn.Identity()
            self.interpolate_pos_encoding = self._needs_interpolation()
        if self.text is not None:
            text_width = self.text.config.hidden_size
            self.text_proj = nn.Linear(text_width, width) if text_width != width else nn.Identity()
        elif self.vision is not None:
            # Frames only: a learned query token plays the role of [CLS] and reads the vision tokens.
            self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.fusion = nn.ModuleList(
            FusionLayer(width, config.fusion_heads, config.dropout, cross_attention=self.vision is not None)
            for _ in range(config.fusion_layers if config.is_multimodal else 0))
        self.fusion_norm = nn.LayerNorm(width) if config.is_multimodal else None
        self.features = (DenseFeatureBranch(config.feature_mean, config.feature_std, config.feature_hidden,
                                            config.dropout) if config.feature_names else None)
        self.output_size = ((width if config.is_multimodal else 0)
                            + (config.feature_hidden if config.feature_names else 0))

    def _needs_interpolation(self) -> bool:
        """Pretrained backbones trained on another image size interpolate their position embeddings."""
        native = getattr(self.vision.config, "image_size", self.config.image_size)
        if native in (self.config.image_size, [self.config.image_size] * 2, (self.config.image_size,) * 2):
            return False
        if "interpolate_pos_encoding" not in inspect.signature(self.vision.forward).parameters:
            raise ValueError(f"vision backbone '{self.vision.config.model_type}' expects images of size "
                             f"{native} and cannot interpolate to image_size {self.config.image_size}")
        return True

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        expected = (self.config.frames_per_video, self.config.image_size, self.config.image_size, 3)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"expected frames of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(frames.shape)}")
        batch, num_frames = frames.shape[:2]
        pixels = frames.permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B*F, 3, H, W)
        pixels = (pixels.to(self.frame_position.dtype) / 255.0 - 0.5) / 0.5
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate_pos_encoding else {}
        tokens = self.vision(pixel_values=pixels, **kwargs).last_hidden_state  # (B*F, P+1, Hv)
        tokens = tokens.unflatten(0, (batch, num_frames))  # (B, F, P+1, Hv)
        tokens = tokens + self.frame_position[None, :, None, :]  # (B, F, P+1, Hv)
        return self.vision_proj(tokens.mean(dim=1))  # (B, P+1, H)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        max_length = self.text.config.max_position_embeddings
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape or input_ids.shape[1] > max_length:
            raise ValueError(f"expected input_ids and attention_mask of one shape (B, L <= {max_length}), "
                             f"got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        states = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, Ht)
        return self.text_proj(states)  # (B, L, H)

    def fuse(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fused first token: [CLS] of the text, or the query token without text."""
        vision = self.encode_frames(batch["frames"]) if self.vision is not None else None  # (B, P+1, H)
        if self.text is not None:
            tokens = self.encode_text(batch["input_ids"], batch["attention_mask"])  # (B, L, H)
            mask = batch["attention_mask"].bool()  # (B, L)
        else:
            tokens, mask = self.query.expand(vision.shape[0], -1, -1), None  # (B, 1, H)
        for layer in self.fusion:
            tokens = layer(tokens, mask, vision)
        return self.fusion_norm(tokens[:, 0])  # (B, H)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        for key in self.required_keys():
            if key not in batch:
                raise ValueError(f"expected batch key '{key}' (the config needs it), got {sorted(batch)}")
        parts = []
        if self.config.is_multimodal:
            parts.append(self.fuse(batch))  # (B, H)
        if self.features is not None:
            parts.append(self.features(batch["features"]))  # (B, Hd)
        return torch.cat(parts, dim=-1)  # (B, output_size)

    def required_keys(self) -> list[str]:
        keys = ["frames"] if self.vision is not None else []
        keys += ["input_ids", "attention_mask"] if self.text is not None else []
        return keys + (["features"] if self.features is not None else [])

    def load_pretrained_backbones(self, vision_model_path: str | os.PathLike | None = None,
                                  text_model_path: str | os.PathLike | None = None) -> None:
        """Copy the weights of local Hugging Face folders into the vision / text encoders."""
        for path, backbone, kind in ((vision_model_path, self.vision, "vision"),
                                     (text_model_path, self.text, "text")):
            if path is None:
                continue
            if backbone is None:
                raise CpfdError(f"{path}: the config has no {kind} input, so there is no {kind} encoder to load")
            copy_backbone_weights(path, backbone)


def copy_backbone_weights(path: str | os.PathLike, backbone: nn.Module) -> None:
    """Load `AutoModel.from_pretrained(path)` (offline) and copy every tensor `backbone` has."""
    if not Path(path).is_dir():
        raise CpfdError(f"{path}: pretrained model folder not found")
    if not any(Path(path).glob("*.safetensors")):
        pickled = [p.name for p in Path(path).iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        raise CpfdError(f"{path}: no .safetensors weights" + (f" (it holds {', '.join(sorted(pickled))})" if pickled else "")
                        + "; cpfd loads safetensors only, never pickled weights: convert them with save_pretrained")
    try:
        pretrained = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise CpfdError(f"{path}: cannot load the pretrained backbone ({one_line(error)})") from None
    source, target = pretrained.state_dict(), backbone.state_dict()
    missing = [key for key in target if key not in source]
    wrong = [f"{key} is {list(source[key].shape)} in the folder, {list(target[key].shape)} in the model"
             for key in target if key in source and source[key].shape != target[key].shape]
    if missing or wrong:
        raise CpfdError(f"{path}: weights do not fit the configured backbone: "
                        + describe_differences(missing, [], wrong))
    backbone.load_state_dict({key: source[key] for key in target})


class PreTrainedClassifier(nn.Module):
    """What X-VLM and DF-X-VLM share, as Hugging Face's PreTrainedModel does for its models: the
    model folder (`save_pretrained` / `from_pretrained`), loading pretrained backbones into
    `self.encoder`, and counting parameters. Subclasses set `config_class` and build `encoder`."""

    config_class = XVLMConfig
    encoder: XVLMEncoder

    def load_pretrained_backbones(self, vision_model_path: str | os.PathLike | None = None,
                                  text_model_path: str | os.PathLike | None = None) -> None:
        self.encoder.load_pretrained_backbones(vision_model_path, text_model_path)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        save_model_folder(directory, self.config.to_dict(), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu"):
        """The model saved in `directory` (a folder `save_pretrained` wrote), on `device`."""
        return load_model_folder(cls, directory, device)


class XVLMForClassification(PreTrainedClassifier):
    """X-VLM with a classification head: `forward(batch) -> XVLMOutput(logits, pooled)`."""

    config_class = XVLMConfig

    def __init__(self, config: XVLMConfig):
        super().__init__()
        self.config = config
        self.encoder = XVLMEncoder(config)
        self.head = ClassificationHead(self.encoder.output_size, config.head_hidden, config.num_classes,
                                       config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> XVLMOutput:
        pooled = self.encoder(batch)  # (B, H)
        return XVLMOutput(logits=self.head(pooled), pooled=pooled)
