"""The synthetic short-video corpus behind `cpfd synth`: a test instrument with a known story.

Each video has visible latent factors drawn from N(0, 1) that the frames and the text render,
with noise (`object`, `motion`, `text`), and a true label Bernoulli(sigmoid(logit)) with

    logit = bias + visible_weight * (w_v . visible) + hidden_weight * h,   h ~ N(0, 1)

(`w_v` a fixed unit vector; `bias` solved so the labelled positive rate is the preset's). The
stored label is the true one after human-label noise (asymmetric flips). Two stories (STORIES)
say where the 26 privileged dense features get their knowledge of the label:

- "latent" (the default): h = w_p . (creator_risk, audience_reaction, audio), three latents no
  pixel or word depends on, which only the privileged features measure; hidden_weight =
  privileged_strength * privileged_weight (strength 1 is the historical corpus, 0 leaves the
  privileged features nothing beyond the visible latents).
- "consequence": h is unseen by every input; hidden_weight = privileged_weight; reports, creator
  strikes and legacy moderation scores react to the true label (by privileged_strength *
  REACTION_SCALE * REACTIONS) and to the visible content, engagement to the visible content and
  nuisance latents only.

So a teacher that sees the privileged features can beat any frames+text student, by an amount
the preset, the story and the strength set. docs/synthetic.md tells the whole story, feature by
feature, and gives the five presets.

    write_synthetic_corpus(out, preset="task3", seed=1)      # what `cpfd synth` calls
    write_synthetic_corpus(out, story="consequence", privileged_strength=2.0)
    read_truth(out)                                          # true labels, flips, latents (analysis only)
    python -m cpfd.experiment.synth                            # oracle ROC AUCs per preset (the doc's table)
    python -m cpfd.experiment.synth strengths                  # ... per story and strength (task1, task5)

Rows are drawn in fixed chunks of CHUNK_ROWS, each from its own random stream keyed by (seed,
preset, split, chunk index), and written one at a time through `CorpusWriter` (and the truth
file through a ParquetWriter): memory does not grow with the corpus size, and the rows do not
depend on sharding, frame count or image size (those change only how the same latents are
rendered). Story and strength change no draw of that stream: the same seed renders the same
videos in every story and at every strength.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from cpfd.storage.atomic import commit, temp_path_for
from cpfd.storage.corpus import Corpus, CorpusWriter
from cpfd.storage.errors import CpfdError

# Bump when the same seed and options would write different rows (so old corpora stay explainable).
GENERATOR_VERSION = 1

# Rows drawn per vectorized chunk. Fixed, not tied to shards or row groups, so the data is the
# same whatever the sharding; small enough that a chunk's arrays are a few hundred KB.
CHUNK_ROWS = 512

CLASSES = ["negative", "positive"]
VISIBLE_LATENTS = ["object", "motion", "text"]
PRIVILEGED_LATENTS = ["creator_risk", "audience_reaction", "audio"]
# How much each latent moves the label logit, within its group (normalized to unit length below).
VISIBLE_MIX = np.array([0.55, 0.45, 0.70])
PRIVILEGED_MIX = np.array([0.50, 0.70, 0.50])
W_VISIBLE = VISIBLE_MIX / np.linalg.norm(VISIBLE_MIX)
W_PRIVILEGED = PRIVILEGED_MIX / np.linalg.norm(PRIVILEGED_MIX)

# Non-privileged dense features: known when the video is uploaded, so a served model may use them.
FEATURES = ["duration_s", "upload_hour", "has_music"]

# Privileged dense features: only known later (engagement, reports), or too costly to serve
# (creator history joins, legacy models). NaN = missing. docs/synthetic.md has each one's recipe.
PRIVILEGED_FEATURES = [
    # engagement, view-dependent: rates are NaN below MIN_VIEWS_FOR_RATES, and noisy just above
    "views_log10",
    "like_rate",
    "share_rate",
    "comment_rate",
    "dislike_rate",
    "report_rate",
    "negative_comment_rate",
    "skip_rate",
    "avg_watch_ratio",
    "report_count",
    # creator history: NaN for new creators (fewer than MIN_POSTS_FOR_HISTORY earlier posts)
    "creator_prior_posts_log10",
    "creator_prior_violations",
    "creator_strike_rate",
    "creator_avg_report_rate",
    "creator_account_age_days",
    "creator_followers_log10",
    # legacy models: NaN when the model did not run on this video
    "legacy_content_score",
    "legacy_visual_score",
    "legacy_text_score",
    "legacy_audio_score",
    "asr_keyword_hits",
    "legacy_spam_score",
    "hashtag_risk_score",
    # weak or pure nuisance, as many real dense features are
    "music_popularity",
    "region_risk_prior",
    "upload_device_score",
]
MIN_VIEWS_FOR_RATES = 100
MIN_VIEWS_FOR_COUNTS = 20
MIN_POSTS_FOR_HISTORY = 5
LEGACY_MISSING = 0.12  # share of videos a given legacy model skipped (pipeline gaps)

# Where the privileged features' knowledge of the label comes from (docs/synthetic.md):
# "latent": they measure latents that are part of the label's cause (today's corpus);
# "consequence": they react to the true label itself (reports, strikes, legacy moderation scores)
# and to the visible content, as on a real platform; the label's non-visible part is unseen.
STORIES = ("latent", "consequence")
# The consequence story's latents besides the visible ones: the part of the logit no input sees,
# and nuisance latents that stand where the latent story's privileged latents stand in the
# feature recipes (so views, creator history and audio behave as there) but are not in the label.
CONSEQUENCE_LATENTS = ["unseen", "creator_nuisance", "audience_nuisance", "audio_nuisance"]
# Consequence story: how much a truly violating video (true label 1) shifts each reacting
# signal's logit, before privileged_strength * REACTION_SCALE. Relative sizes from the story:
# reports are the most direct reaction; strikes, the creator's report history and the legacy
# content model follow; per-modality legacy models and ASR see a violation only partly.
REACTIONS = {
    "reports": 1.5,  # report_rate, report_count
    "strikes": 1.0,  # creator_prior_violations, creator_strike_rate
    "creator_reports": 1.0,  # creator_avg_report_rate
    "legacy_content": 1.0,  # legacy_content_score
    "legacy_modality": 0.5,  # legacy_visual / text / audio / spam scores
    "asr": 0.5,  # asr_keyword_hits
}
# One scale for all reactions, set from oracle numbers only (no model trained on the corpus): at
# strength 1 the teacher oracle (logistic regression on visible latents + dense features, 20k
# rows, seed 1) of task1 reaches the latent story's (0.932 ROC AUC; 0.931 at 0.62, 0.934 at 0.63),
# so strength 1 offers a teacher the same headroom in both stories. Not tuned on any method.
REACTION_SCALE = 0.62
# Ground truth for analysis (never a model input): true labels, flips and latents per video.
TRUTH_FILE = "synthetic_truth.parquet"
TRUTH_ROW_GROUP_ROWS = 8_192

# Vocabulary. Signal words come more often as the `text` latent (title) or the mix of `text` and
# `object` (OCR) grows, benign cue words as it falls; topic and common words carry no signal.
SIGNAL_WORDS = [
    "free", "giveaway", "cash", "click", "link", "bio", "dm", "win", "prize", "crypto", "hack",
    "secret", "shocking", "banned", "exposed", "deal", "limited", "urgent", "leaked", "unfiltered",
]
BENIGN_WORDS = [
    "family", "kids", "lesson", "official", "review", "tips", "learn", "calm", "homemade", "guide",
    "relaxing", "wholesome",
]
TOPICS = {
    "cooking": ["recipe", "kitchen", "pasta", "baking", "dinner", "spicy"],
    "travel": ["beach", "city", "hotel", "sunset", "roadtrip", "mountains"],
    "pets": ["puppy", "kitten", "dog", "cat", "parrot", "walk"],
    "music": ["song", "cover", "guitar", "beat", "concert", "remix"],
    "fitness": ["workout", "gym", "yoga", "run", "abs", "stretch"],
    "beauty": ["makeup", "skincare", "hair", "nails", "outfit", "haul"],
    "gaming": ["gameplay", "level", "boss", "speedrun", "stream", "clutch"],
    "sports": ["football", "goal", "basketball", "dunk", "match", "training"],
}
COMMON_WORDS = [
    "the", "my", "this", "a", "of", "with", "and", "for", "to", "in", "so", "best", "new", "day",
    "today", "watch", "you", "how", "part", "2", "vlog", "challenge", "wait", "for", "it",
]
TOPIC_NAMES = list(TOPICS)
VOCAB = SIGNAL_WORDS + BENIGN_WORDS + [w for t in TOPIC_NAMES for w in TOPICS[t]] + COMMON_WORDS
N_SIGNAL, N_BENIGN, N_TOPIC_WORDS = len(SIGNAL_WORDS), len(BENIGN_WORDS), len(TOPICS["cooking"])
TOPIC_OFFSET = N_SIGNAL + N_BENIGN
COMMON_OFFSET = TOPIC_OFFSET + len(TOPIC_NAMES) * N_TOPIC_WORDS
MAX_TITLE_WORDS, MAX_OCR_WORDS = 10, 8
OCR_PRESENT = 0.6

# Frames: a background tinted by the topic, one key object and up to two distractors.
SHAPES = ["circle", "square", "diamond", "triangle"]
TRIANGLE = SHAPES.index("triangle")  # the key object's "suspicious" shape
TOPIC_BACKGROUNDS = np.array(
    [[92, 70, 52], [60, 96, 120], [96, 104, 70], [60, 52, 88], [84, 84, 84], [120, 86, 96],
     [40, 48, 60], [58, 100, 62]], dtype=np.float64,
)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresetSpec:
    """One synthetic task: how the label comes about, how well each view sees it, default sizes."""

    name: str
    summary: str
    positive_rate: float  # share of positive labels as stored (after label noise)
    visible_weight: float  # logit scale of the latents frames and text render
    privileged_weight: float  # logit scale of the latents only privileged features measure
    flip_pos_to_neg: float  # human-label noise: a true positive labelled negative (missed case)
    flip_neg_to_pos: float  # human-label noise: a true negative labelled positive
    visible_clarity: float = 1.0  # how sharply frames and text render the visible latents
    privileged_noise: float = 1.0  # measurement noise of the privileged features (1 = nominal)
    median_views: float = 1000.0  # fewer views: more view-dependent features missing or noisy
    train_samples: int = 3000
    eval_samples: int = 1500


# Chosen from the paper's Table 3 (which gives no positive rates: the rates below are read off
# the gap between ROC AUC and PR AUC, see docs/synthetic.md) before any model was trained on
# them; they are not tuned to favour any distillation method.
PRESETS: dict[str, PresetSpec] = {
    "task1": PresetSpec(
        name="task1",
        summary="rare positives (8%), medium difficulty, strong privileged signal",
        positive_rate=0.08, visible_weight=3.5, privileged_weight=3.5,
        flip_pos_to_neg=0.10, flip_neg_to_pos=0.005, privileged_noise=0.6, median_views=1500.0,
        train_samples=3000, eval_samples=3000,
    ),
    "task2": PresetSpec(
        name="task2",
        summary="majority positives (62%), harder, weak privileged signal",
        positive_rate=0.62, visible_weight=4.0, privileged_weight=1.3,
        flip_pos_to_neg=0.05, flip_neg_to_pos=0.08, privileged_noise=1.2, median_views=600.0,
    ),
    "task3": PresetSpec(
        name="task3",
        summary="30% positives, easy, moderate privileged signal, clean labels",
        positive_rate=0.30, visible_weight=9.0, privileged_weight=2.5,
        flip_pos_to_neg=0.015, flip_neg_to_pos=0.005, visible_clarity=1.3, privileged_noise=0.8,
    ),
    "task4": PresetSpec(
        name="task4",
        summary="balanced (48%), medium difficulty, weak-to-moderate privileged signal",
        positive_rate=0.48, visible_weight=4.5, privileged_weight=1.7,
        flip_pos_to_neg=0.06, flip_neg_to_pos=0.06,
    ),
    "task5": PresetSpec(
        name="task5",
        summary="very rare positives (3%), hard, noisy labels, moderate privileged signal",
        positive_rate=0.03, visible_weight=3.0, privileged_weight=2.2,
        flip_pos_to_neg=0.20, flip_neg_to_pos=0.003, visible_clarity=0.8, median_views=400.0,
        train_samples=5000, eval_samples=5000,
    ),
}


def get_preset(preset: str) -> PresetSpec:
    if preset not in PRESETS:
        raise CpfdError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    return PRESETS[preset]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def clean_positive_rate(spec: PresetSpec) -> float:
    """The true-label positive rate that, after the preset's flips, gives its stored rate."""
    fn, fp = spec.flip_pos_to_neg, spec.flip_neg_to_pos
    rate = (spec.positive_rate - fp) / (1.0 - fn - fp)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"preset {spec.name}: positive_rate {spec.positive_rate} unreachable with these flips")
    return rate


def with_label_noise(spec: PresetSpec, label_noise: float | None) -> PresetSpec:
    """The preset with every label flipped at rate `label_noise` (both ways) in place of its own
    flips, its true-label positive rate kept (so the stored rate moves with the noise); the preset
    itself for None."""
    if label_noise is None:
        return spec
    if not 0.0 <= label_noise < 0.5:
        raise CpfdError(f"--label-noise must be a rate in [0, 0.5), got {label_noise}")
    true_rate = clean_positive_rate(spec)
    stored = true_rate * (1 - label_noise) + (1 - true_rate) * label_noise
    return replace(spec, flip_pos_to_neg=label_noise, flip_neg_to_pos=label_noise, positive_rate=stored)


def check_story(story: str, privileged_strength: float) -> float:
    """Refuse an unknown story or a negative / non-finite strength; returns the strength as float."""
    if story not in STORIES:
        raise CpfdError(f"--story must be one of {', '.join(STORIES)}, got {story!r}")
    try:
        strength = float(privileged_strength)
    except (TypeError, ValueError):
        raise CpfdError(f"--privileged-strength must be a number >= 0, got {privileged_strength!r}") from None
    if not np.isfinite(strength) or strength < 0:
        raise CpfdError(f"--privileged-strength must be a finite number >= 0, got {privileged_strength!r}")
    return strength + 0.0  # -0.0 -> 0.0, so it names the same corpus as 0


def hidden_weight(spec: PresetSpec, privileged_strength: float = 1.0, story: str = "latent") -> float:
    """The logit weight of the label's non-visible part (a unit normal).

    latent: privileged_strength * privileged_weight (the privileged latents' share of the label);
    consequence: privileged_weight, whatever the strength (the strength moves the privileged
    signals, not the label).
    """
    return spec.privileged_weight * (privileged_strength if story == "latent" else 1.0)


def label_bias(spec: PresetSpec, privileged_strength: float = 1.0, story: str = "latent") -> float:
    """The logit bias b with E[sigmoid(b + sigma Z)] = clean positive rate, Z ~ N(0, 1).

    The logit's latent part is a sum of independent normals, sd sigma = sqrt(a_v^2 + a_h^2)
    (a_h = hidden_weight), so the rate is a 1-D integral: Gauss-Hermite quadrature, then
    bisection. Exact and deterministic, no sampling.
    """
    target = clean_positive_rate(spec)
    sigma = float(np.hypot(spec.visible_weight, hidden_weight(spec, privileged_strength, story)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(96)
    weights = weights / weights.sum()
    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(weights @ _sigmoid(mid + sigma * nodes)) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------
# One chunk of videos: latents -> labels -> dense features -> what to render
# --------------------------------------------------------------------------------------------


def _chunk_rng(seed: int, preset: str, split: str, chunk: int) -> np.random.Generator:
    entropy = [seed % 2**64, zlib.crc32(preset.encode()), GENERATOR_VERSION]
    key = (0 if split == "train" else 1, chunk)
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def _rates(rng, views, logit, noise):
    """Observed engagement rates: a per-video true rate, then binomial counting over the views."""
    rate = _sigmoid(logit + noise * rng.standard_normal(len(views)))
    count = rng.binomial(views, rate)
    return count / np.maximum(views, 1), count


def _hsv_to_rgb(h, s, v):
    """Vectorized HSV (all in [0, 1]) to RGB in [0, 255]."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros((len(h), 3))
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        rgb[m] = np.stack([r[m], g[m], b[m]], axis=1)
    return np.rint(rgb * 255)


def _words(rng, n, max_words, min_words, present, cue, clarity, topic):
    """Word ids (n, max_words) and lengths (n,). Signal words rise with `cue`, benign ones fall."""
    lengths = np.where(present, rng.integers(min_words, max_words + 1, n), 0)
    p_signal = 0.40 * _sigmoid(1.6 * clarity * cue - 2.0)[:, None]
    p_benign = 0.30 * _sigmoid(-1.6 * clarity * cue - 1.0)[:, None]
    u = rng.random((n, max_words))
    signal = rng.integers(0, N_SIGNAL, (n, max_words))
    benign = N_SIGNAL + rng.integers(0, N_BENIGN, (n, max_words))
    topical = TOPIC_OFFSET + topic[:, None] * N_TOPIC_WORDS + rng.integers(0, N_TOPIC_WORDS, (n, max_words))
    common = COMMON_OFFSET + rng.integers(0, len(COMMON_WORDS), (n, max_words))
    rest = (u - p_signal - p_benign) / (1.0 - p_signal - p_benign)  # uniform in [0, 1) on the rest
    ids = np.where(u < p_signal, signal, np.where(u < p_signal + p_benign, benign, np.where(rest < 0.5, topical, common)))
    return ids, lengths


def _privileged_features(spec: PresetSpec, rng, n, vis, drivers, has_music, reaction) -> np.ndarray:
    """The privileged features (PRIVILEGED_FEATURES order), (n, 26) float32, NaN = missing.

    drivers (n, 3): creator, audience, audio: the privileged latents in the latent story, the
    nuisance latents in the consequence story. reaction: each REACTIONS key's logit shift per
    video (0.0 in the latent story). `ns` scales every measurement noise; see docs/synthetic.md.
    """
    normal = rng.standard_normal
    obj, motion, text = vis.T
    creator, audience, audio = drivers.T
    visible_score = vis @ W_VISIBLE
    ns = spec.privileged_noise
    views = np.rint(np.exp(np.log(spec.median_views) + 1.3 * normal(n) + 0.25 * audience + 0.15 * motion)).astype(np.int64)
    like, _ = _rates(rng, views, -2.8 + 0.25 * motion - 0.3 * audience, 0.5 * ns)
    share, _ = _rates(rng, views, -4.5 + 0.5 * audience + 0.2 * text, 0.5 * ns)
    comment, _ = _rates(rng, views, -4.0 + 0.4 * audience, 0.5 * ns)
    dislike, _ = _rates(rng, views, -3.5 + 0.8 * audience, 0.5 * ns)
    report, report_count = _rates(rng, views, -4.5 + 1.0 * audience + 0.3 * obj + reaction["reports"], 0.5 * ns)
    negative_comment, _ = _rates(rng, views, -3.5 + 0.7 * audience + 0.2 * creator, 0.5 * ns)
    skip, _ = _rates(rng, views, -1.0 + 0.4 * audience - 0.2 * motion, 0.5 * ns)
    watch = _sigmoid(0.3 - 0.3 * audience + 0.2 * motion + 0.5 * ns * normal(n))
    watch = np.clip(watch + 0.3 * normal(n) / np.sqrt(np.maximum(views, 1)), 0.0, 1.0)
    few_views = views < MIN_VIEWS_FOR_RATES

    posts = np.rint(np.exp(3.0 + 1.5 * normal(n))).astype(np.int64)
    violation_rate = _sigmoid(-4.0 + 1.2 * creator + reaction["strikes"] + 0.5 * ns * normal(n))
    violations = rng.poisson(posts * violation_rate)
    new_creator = posts < MIN_POSTS_FOR_HISTORY
    creator_report = _sigmoid(-4.5 + 1.0 * creator + reaction["creator_reports"] + 0.6 * ns * normal(n))
    account_age = np.maximum(1.0, np.rint(np.exp(6.0 - 0.4 * creator + 0.8 * normal(n))))
    followers_log10 = np.log10(1.0 + np.exp(7.0 + 2.0 * normal(n) + 0.3 * np.log1p(posts)))

    def legacy(score):
        return np.where(rng.random(n) < LEGACY_MISSING, np.nan, _sigmoid(score + 0.8 * ns * normal(n)))

    modality = reaction["legacy_modality"]
    content_score = legacy(1.2 * visible_score + 0.5 * creator - 1.0 + reaction["legacy_content"])
    visual_score = legacy(1.5 * obj + 0.5 * motion - 1.0 + modality)
    text_score = legacy(1.5 * text - 1.0 + modality)
    has_audio = rng.random(n) < 0.95
    audio_score = np.where(has_audio, legacy(1.5 * audio - 1.0 + modality), np.nan)
    has_speech = rng.random(n) < 0.65
    asr_rate = np.exp(-1.5 + 0.9 * audio + reaction["asr"] + 0.3 * ns * normal(n))
    asr_hits = np.where(has_speech, rng.poisson(asr_rate), np.nan)
    spam_score = legacy(0.8 * creator + 0.5 * text - 1.5 + modality)
    has_hashtags = rng.random(n) < 0.7
    hashtag_score = np.where(has_hashtags, _sigmoid(1.0 * text - 1.0 + 1.0 * ns * normal(n)), np.nan)
    music_popularity = np.where(has_music, rng.random(n), np.nan)
    region_prior = _sigmoid(0.3 * creator + normal(n) - 2.0)
    device_score = normal(n)

    nan = np.nan
    privileged = np.stack(
        [
            np.log10(1.0 + views),
            np.where(few_views, nan, like),
            np.where(few_views, nan, share),
            np.where(few_views, nan, comment),
            np.where(few_views, nan, dislike),
            np.where(few_views, nan, report),
            np.where(few_views, nan, negative_comment),
            np.where(few_views, nan, skip),
            np.where(few_views, nan, watch),
            np.where(views < MIN_VIEWS_FOR_COUNTS, nan, report_count),
            np.log10(1.0 + posts),
            np.where(new_creator, nan, violations),
            np.where(new_creator, nan, violations / np.maximum(posts, 1)),
            np.where(new_creator, nan, creator_report),
            account_age,
            followers_log10,
            content_score,
            visual_score,
            text_score,
            audio_score,
            asr_hits,
            spam_score,
            hashtag_score,
            music_popularity,
            region_prior,
            device_score,
        ],
        axis=1,
    ).astype(np.float32)
    assert privileged.shape[1] == len(PRIVILEGED_FEATURES)
    return privileged


def consequence_reactions(true_label: np.ndarray, privileged_strength: float) -> dict:
    """Consequence story: each reacting signal's logit shift, strength * REACTION_SCALE * REACTIONS[k]
    for a truly violating video, 0 otherwise."""
    y = true_label.astype(np.float64)
    return {k: privileged_strength * REACTION_SCALE * r * y for k, r in REACTIONS.items()}


NO_REACTION = dict.fromkeys(REACTIONS, 0.0)  # latent story: adding 0.0 leaves every recipe's value as is


def draw_chunk(
    spec: PresetSpec,
    bias: float,
    rng: np.random.Generator,
    n: int,
    *,
    privileged_strength: float = 1.0,
    story: str = "latent",
    privileged_missing: float = 0.0,
) -> dict:
    """Everything about n videos as arrays: latents, labels, features, and render parameters.

    The order of the draws below is part of the generator: changing it changes every corpus
    (bump GENERATOR_VERSION). `bias` must be label_bias(spec, privileged_strength, story).
    The strength and the story change no draw of the main stream: the same seed gives the same
    videos (frames, text, non-privileged features) in every story and at every strength; the
    latent story's strength moves only the labels, the consequence story's only the privileged
    features (drawn from a child stream). `privileged_missing` blanks (NaN) every privileged
    feature of that share of the videos, drawn from another child stream.
    """
    if story not in STORIES:
        raise ValueError(f"expected a story in {STORIES}, got {story!r}")
    normal = rng.standard_normal
    vis = normal((n, 3))  # object, motion, text
    priv = normal((n, 3))  # creator_risk, audience_reaction, audio (latent story)
    visible_score = vis @ W_VISIBLE
    # latent story: the privileged latents' part of the logit; consequence story: the part no
    # input sees (the same numbers, so at strength 1 both stories draw the same labels).
    privileged_score = priv @ W_PRIVILEGED
    hidden = hidden_weight(spec, privileged_strength, story)
    logit = bias + spec.visible_weight * visible_score + hidden * privileged_score
    true_label = rng.random(n) < _sigmoid(logit)
    flip = np.where(true_label, rng.random(n) < spec.flip_pos_to_neg, rng.random(n) < spec.flip_neg_to_pos)
    label = true_label ^ flip

    # Non-privileged features: duration leans a little on motion (fast clips are short).
    obj, motion, text = vis.T
    duration = np.clip(np.exp(3.2 - 0.25 * motion + 0.6 * normal(n)), 3.0, 600.0)
    upload_hour = rng.integers(0, 24, n)
    has_music = rng.random(n) < 0.6
    features = np.stack([np.round(duration, 1), upload_hour, has_music], axis=1)

    # Drawn from the main stream in both stories (the consequence story then replaces them), so
    # the rendering draws after them are the same in both.
    privileged = _privileged_features(spec, rng, n, vis, priv, has_music, NO_REACTION)
    latents = dict(zip(VISIBLE_LATENTS + PRIVILEGED_LATENTS, np.concatenate([vis, priv], axis=1).T))
    if story == "consequence":
        story_rng = rng.spawn(1)[0]  # a child stream: leaves the main one untouched
        nuisance = story_rng.standard_normal((n, 3))  # creator, audience, audio: not in the label
        reaction = consequence_reactions(true_label, privileged_strength)
        privileged = _privileged_features(spec, story_rng, n, vis, nuisance, has_music, reaction)
        latents = dict(zip(VISIBLE_LATENTS + CONSEQUENCE_LATENTS, [*vis.T, privileged_score, *nuisance.T]))

    # What the frames show. The key object turns triangle and red as `object` grows, and moves
    # faster as `motion` grows; everything else (topic, sizes, places, distractors) is nuisance.
    clarity = spec.visible_clarity
    topic = rng.integers(0, len(TOPIC_NAMES), n)
    background = np.clip(TOPIC_BACKGROUNDS[topic] + 14.0 * normal((n, 3)), 0, 255)
    key_shape = np.where(rng.random(n) < _sigmoid(1.5 * clarity * obj - 1.5), TRIANGLE, rng.integers(0, TRIANGLE, n))
    hue = 0.62 * (1.0 - _sigmoid(1.2 * clarity * obj + 0.7 * normal(n)))  # 0 = red ... 0.62 = blue
    key_color = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0, n), rng.uniform(0.75, 1.0, n))
    key_radius = rng.uniform(0.15, 0.25, n)  # fractions of the image size
    key_pos = rng.uniform(0.0, 1.0, (n, 2))  # fraction of the free range, see _trajectory
    speed = 0.02 + 0.10 * _sigmoid(1.5 * clarity * motion + 0.6 * normal(n))  # image sizes per frame
    angle = rng.uniform(0.0, 2 * np.pi, n)
    key_velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    n_distractors = rng.integers(0, 3, n)
    d_shape = rng.integers(0, len(SHAPES), (n, 2))
    d_color = _hsv_to_rgb(rng.random(2 * n), rng.uniform(0.3, 0.9, 2 * n), rng.uniform(0.5, 1.0, 2 * n)).reshape(n, 2, 3)
    d_radius = rng.uniform(0.07, 0.13, (n, 2))
    d_pos = rng.uniform(0.0, 1.0, (n, 2, 2))
    d_velocity = rng.uniform(-0.03, 0.03, (n, 2, 2))

    # What the text says: the title sees `text`; the OCR overlay (when there is one) a mix of
    # `text` and `object` (stickers name what is shown).
    title_ids, title_len = _words(rng, n, MAX_TITLE_WORDS, 3, np.ones(n, bool), text, clarity, topic)
    ocr_present = rng.random(n) < OCR_PRESENT
    ocr_ids, ocr_len = _words(rng, n, MAX_OCR_WORDS, 2, ocr_present, (text + obj) / np.sqrt(2), clarity, topic)

    missing = np.zeros(n, dtype=bool)
    if privileged_missing > 0:  # a child stream of its own: every other draw stays as without it
        missing = rng.spawn(1)[0].random(n) < privileged_missing
        privileged = np.array(privileged, dtype=np.float64)
        privileged[missing] = np.nan  # a fresh upload: no reports, no legacy score, no engagement yet

    return {
        "n": n,
        "privileged_missing": missing,
        "visible": vis,
        "privileged_latents": priv,  # consequence story: the draws behind `unseen` (w_p . priv)
        "latents": latents,  # the story's latents by name (what the truth file stores)
        "logit": logit,
        "true_label": true_label,
        "label": label,
        "features": features.astype(np.float32),
        "privileged": privileged,
        "background": background.astype(np.uint8),
        "key_shape": key_shape,
        "key_color": key_color.astype(np.uint8),
        "key_radius": key_radius,
        "key_pos": key_pos,
        "key_velocity": key_velocity,
        "n_distractors": n_distractors,
        "d_shape": d_shape,
        "d_color": d_color.astype(np.uint8),
        "d_radius": d_radius,
        "d_pos": d_pos,
        "d_velocity": d_velocity,
        "title_ids": title_ids,
        "title_len": title_len,
        "ocr_ids": ocr_ids,
        "ocr_len": ocr_len,
    }


# --------------------------------------------------------------------------------------------
# Rendering one video: frames (PNG) and text
# --------------------------------------------------------------------------------------------


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_LEVEL = 3  # zlib level: ~2x faster than 6 on these frames, ~40% larger (~140 bytes a frame)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _trajectory(start: np.ndarray, velocity: np.ndarray, radius: np.ndarray, frames: int, size: int) -> np.ndarray:
    """Centres in pixels, (..., frames, 2): straight motion that bounces off the image borders.

    start (..., 2) is a fraction of the free range [radius, size - radius], velocity (..., 2) in
    image sizes per frame, radius (...) in pixels.
    """
    span = np.maximum(size - 2 * radius, 1e-6)[..., None, None]
    t = np.arange(frames, dtype=np.float64)[:, None]
    x = start[..., None, :] * span + velocity[..., None, :] * size * t  # travelled in the free range
    x = np.mod(x, 2 * span)
    return radius[..., None, None] + np.where(x > span, 2 * span - x, x)


def render_plan(c: dict, frames_per_video: int, image_size: int) -> dict:
    """Per chunk, vectorized: every object's radius and centre in every frame, colors, shapes,
    labels and dense features, as Python lists (one conversion per chunk, not per row)."""
    size = image_size
    key_r = c["key_radius"] * size
    d_r = c["d_radius"] * size
    return {
        "key_r": key_r.tolist(),
        "key_xy": _trajectory(c["key_pos"], c["key_velocity"], key_r, frames_per_video, size).tolist(),
        "d_r": d_r.tolist(),
        "d_xy": _trajectory(c["d_pos"], c["d_velocity"], d_r, frames_per_video, size).tolist(),
        "background": [tuple(v) for v in c["background"].tolist()],
        "key_color": [tuple(v) for v in c["key_color"].tolist()],
        "d_color": [[tuple(v) for v in pair] for pair in c["d_color"].tolist()],
        "key_shape": c["key_shape"].tolist(),
        "d_shape": c["d_shape"].tolist(),
        "n_distractors": c["n_distractors"].tolist(),
        "label": c["label"].astype(np.int32).tolist(),
        "privileged": c["privileged"].tolist(),
        "features": c["features"].tolist(),
    }


def _draw_shape(draw: ImageDraw.ImageDraw, shape: int, x: float, y: float, r: float, color: tuple) -> None:
    name = SHAPES[shape]
    if name == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    elif name == "square":
        s = 0.85 * r
        draw.rectangle([x - s, y - s, x + s, y + s], fill=color)
    elif name == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=color)
    else:  # triangle
        draw.polygon([(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)], fill=color)


def render_frames(plan: dict, j: int, frames_per_video: int, image_size: int) -> list[bytes]:
    """The frames of video j of a chunk's render plan, PNG-encoded, in time order.

    Pillow draws, but its per-image overhead dominates at these sizes (its PNG writer alone costs
    ~170 us on a 32x32 frame, most of the time of a million-video corpus). So all frames go on
    one tall canvas (a 2-pixel gutter between frames keeps a shape's boundary pixel out of its
    neighbour), are cut apart with numpy, and written as PNG by hand: 8-bit RGB, filter "None",
    one zlib IDAT chunk (~30 us a frame). Pillow decodes them (tests check).
    """
    size, frames = image_size, frames_per_video
    pitch = size + 2
    canvas = Image.new("RGB", (size, pitch * frames), plan["background"][j])
    draw = ImageDraw.Draw(canvas)
    for t in range(frames):
        top = pitch * t
        for k in range(plan["n_distractors"][j]):  # behind the key object
            x, y = plan["d_xy"][j][k][t]
            _draw_shape(draw, plan["d_shape"][j][k], x, top + y, plan["d_r"][j][k], plan["d_color"][j][k])
        x, y = plan["key_xy"][j][t]
        _draw_shape(draw, plan["key_shape"][j], x, top + y, plan["key_r"][j], plan["key_color"][j])
    pixels = np.asarray(canvas).reshape(frames, pitch, size * 3)[:, :size]  # (F, H, W*3)
    raw = np.zeros((frames, size, size * 3 + 1), np.uint8)  # a leading 0 per row = filter "None"
    raw[:, :, 1:] = pixels
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    end = _png_chunk(b"IEND", b"")
    return [
        PNG_SIGNATURE + header + _png_chunk(b"IDAT", zlib.compress(raw[t].tobytes(), PNG_LEVEL)) + end
        for t in range(frames)
    ]


def render_text(ids: np.ndarray, length: int) -> str:
    return " ".join(VOCAB[i] for i in ids[:length])


def render_row(c: dict, plan: dict, j: int, sample_id: str, frames_per_video: int, image_size: int) -> dict:
    """Video j of chunk c (with its render plan) as a corpus row (storage.schema.CORPUS_SCHEMA)."""
    return {
        "sample_id": sample_id,
        "label": plan["label"][j],
        "title": render_text(c["title_ids"][j], int(c["title_len"][j])),
        "ocr_text": render_text(c["ocr_ids"][j], int(c["ocr_len"][j])),
        "frames": render_frames(plan, j, frames_per_video, image_size),
        "privileged": plan["privileged"][j],
        "features": plan["features"][j],
    }


def iter_chunks(
    spec: PresetSpec, split: str, n: int, seed: int, *, privileged_strength: float = 1.0, story: str = "latent",
    privileged_missing: float = 0.0,
):
    """(first row index, chunk dict, rows to use) for the n videos of a split, chunk by chunk.

    Every chunk holds CHUNK_ROWS videos; the last one's first `rows to use` belong to the split.
    """
    privileged_strength = check_story(story, privileged_strength)
    bias = label_bias(spec, privileged_strength, story)
    for index, start in enumerate(range(0, n, CHUNK_ROWS)):
        rng = _chunk_rng(seed, spec.name, split, index)
        # Always draw a full chunk, so row i is the same whatever n is (a bigger corpus extends a
        # smaller one with the same seed).
        chunk = draw_chunk(spec, bias, rng, CHUNK_ROWS, privileged_strength=privileged_strength, story=story,
                           privileged_missing=privileged_missing)
        yield start, chunk, min(CHUNK_ROWS, n - start)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def truth_schema(story: str, privileged_missing: bool = False) -> pa.Schema:
    """The truth file's columns: ids, split, true label, whether the rater flipped it, latents; with
    --privileged-missing, whether the video's privileged features were blanked."""
    names = VISIBLE_LATENTS + (PRIVILEGED_LATENTS if story == "latent" else CONSEQUENCE_LATENTS)
    return pa.schema(
        [("sample_id", pa.string()), ("split", pa.string()), ("true_label", pa.int32()), ("flipped", pa.bool_())]
        + [(f"latent_{name}", pa.float32()) for name in names]
        + ([("privileged_missing", pa.bool_())] if privileged_missing else [])
    )


def truth_table(chunk: dict, sample_ids: list[str], split: str, schema: pa.Schema) -> pa.Table:
    """The truth rows of the first len(sample_ids) videos of a chunk (schema: truth_schema)."""
    rows = len(sample_ids)
    true_label, label = chunk["true_label"][:rows], chunk["label"][:rows]
    columns = [
        pa.array(sample_ids, pa.string()),
        pa.array([split] * rows, pa.string()),
        pa.array(true_label.astype(np.int32)),
        pa.array(true_label != label),
        *(pa.array(v[:rows].astype(np.float32)) for v in chunk["latents"].values()),  # schema order
    ]
    if "privileged_missing" in schema.names:
        columns.append(pa.array(chunk["privileged_missing"][:rows]))
    # from_arrays, not from_pydict: ~20x faster on 512 rows, and the writer runs once per chunk.
    return pa.Table.from_arrays(columns, schema=schema)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _TruthWriter:
    """Appends truth tables to a temp Parquet file in row groups of TRUTH_ROW_GROUP_ROWS; `close()`
    commits it (fsync + rename) and returns its corpus.json entry. Memory: one row group."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.tmp = path, temp_path_for(path)
        self.schema = schema
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.pending: list[pa.Table] = []
        self.buffered = self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.buffered += table.num_rows
        if self.buffered >= TRUTH_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffered:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.buffered)
            self.rows += self.buffered
            self.pending, self.buffered = [], 0

    def close(self) -> dict:
        self.flush()
        self.writer.close()
        commit(self.tmp, self.path)
        return {"file": self.path.name, "rows": self.rows, "sha256": _sha256_of(self.path)}

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_synthetic_corpus(
    out: str | Path,
    *,
    preset: str = "task1",
    train_samples: int | None = None,
    eval_samples: int | None = None,
    seed: int = 0,
    frames_per_video: int = 4,
    image_size: int = 32,
    rows_per_shard: int = 262_144,
    row_group_rows: int = 8_192,
    overwrite: bool = False,
    progress: bool = True,
    privileged_strength: float = 1.0,
    story: str = "latent",
    label_noise: float | None = None,
    privileged_missing: float = 0.0,
) -> dict:
    """Write a synthetic corpus to `out`; returns its corpus.json content (CorpusWriter.close()).

    Same seed and options -> the same rows, byte for byte. Memory stays constant in the number of
    videos: one chunk of CHUNK_ROWS plus the writers' row-group buffers. `story` (STORIES) and
    `privileged_strength` set where the privileged features' knowledge of the label comes from and
    how much of it there is (docs/synthetic.md). Also writes OUT/synthetic_truth.parquet (true
    labels, flips, latents: for analysis only, see `read_truth`) before corpus.json.
    """
    from tqdm import tqdm

    spec = with_label_noise(get_preset(preset), label_noise)
    privileged_strength = check_story(story, privileged_strength)
    if not 0.0 <= privileged_missing < 1.0:
        raise CpfdError(f"--privileged-missing must be a share in [0, 1), got {privileged_missing}")
    sizes = {
        "train": spec.train_samples if train_samples is None else int(train_samples),
        "eval": spec.eval_samples if eval_samples is None else int(eval_samples),
    }
    for split, n in sizes.items():
        if n < 0:
            raise CpfdError(f"{split}_samples must be >= 0, got {n}")
    if frames_per_video < 1:
        raise CpfdError(f"frames_per_video must be >= 1, got {frames_per_video}")
    if image_size < 8:
        raise CpfdError(f"image_size must be >= 8, got {image_size}")

    created_by = (
        f"cpfd synth --preset {preset} --seed {seed} --train-samples {sizes['train']} "
        f"--eval-samples {sizes['eval']} --frames-per-video {frames_per_video} --image-size {image_size}"
    )
    if story != "latent" or privileged_strength != 1.0:
        created_by += f" --story {story} --privileged-strength {privileged_strength!r}"
    if label_noise is not None:
        created_by += f" --label-noise {label_noise!r}"
    if privileged_missing:
        created_by += f" --privileged-missing {privileged_missing!r}"
    synthetic = {
        "generator_version": GENERATOR_VERSION,
        "preset": asdict(spec),
        "seed": seed,
        "story": story,
        "privileged_strength": privileged_strength,
        "label_noise": label_noise,  # None: the preset's own flips (in "preset")
        "privileged_missing": privileged_missing,
        "label_bias": label_bias(spec, privileged_strength, story),
        "visible_latents": dict(zip(VISIBLE_LATENTS, W_VISIBLE.round(6).tolist())),
    }
    # The logit weight of the label's non-visible part: the privileged latents' score (latent
    # story) or the unseen latent (consequence story).
    synthetic["hidden_weight"] = hidden_weight(spec, privileged_strength, story)
    if story == "latent":
        synthetic["privileged_latents"] = dict(zip(PRIVILEGED_LATENTS, W_PRIVILEGED.round(6).tolist()))
    else:
        synthetic["nuisance_latents"] = CONSEQUENCE_LATENTS[1:]
        synthetic["reactions"] = {k: privileged_strength * REACTION_SCALE * r for k, r in REACTIONS.items()}
    # Ids name the video (its latents), so they carry preset and seed: two corpora that share an
    # id share that video, and the corpus fingerprint (a hash of the ids) tells seeds apart.
    id_prefix = f"syn-{preset}-s{seed}"
    if story != "latent" or privileged_strength != 1.0:
        # Same videos, other labels or privileged features: other ids, so another fingerprint, and
        # a teacher dump of one variant is refused on another (the defaults keep their ids).
        id_prefix = f"syn-{preset}-{story}-S{privileged_strength!r}-s{seed}"
    if label_noise is not None or privileged_missing:
        id_prefix += f"-N{label_noise!r}-M{privileged_missing!r}"  # other labels or features: other ids
    with CorpusWriter(
        out,
        task=f"synthetic-{preset}",
        classes=CLASSES,
        frames_per_video=frames_per_video,
        image_size=image_size,
        has_text=True,
        privileged_features=PRIVILEGED_FEATURES,
        features=FEATURES,
        rows_per_shard=rows_per_shard,
        row_group_rows=row_group_rows,
        overwrite=overwrite,
        created_by=created_by,
        extra={"synthetic": synthetic},
    ) as writer, tqdm(
        total=sum(sizes.values()), desc=f"synth {preset}", unit="video", file=sys.stderr,
        disable=not progress, dynamic_ncols=True,
    ) as bar:
        # The folder is un-finished now (no corpus.json): an older truth file must not outlive it.
        (writer.out / TRUTH_FILE).unlink(missing_ok=True)
        truth = _TruthWriter(writer.out / TRUTH_FILE, truth_schema(story, privileged_missing > 0))
        try:
            for split, n in sizes.items():
                chunks = iter_chunks(spec, split, n, seed, privileged_strength=privileged_strength, story=story,
                                     privileged_missing=privileged_missing)
                for start, chunk, rows in chunks:
                    plan = render_plan(chunk, frames_per_video, image_size)
                    sample_ids = [f"{id_prefix}-{split}-{start + j:07d}" for j in range(rows)]
                    for j, sample_id in enumerate(sample_ids):
                        writer.add(split, render_row(chunk, plan, j, sample_id, frames_per_video, image_size))
                    truth.add(truth_table(chunk, sample_ids, split, truth.schema))
                    bar.update(rows)
        except BaseException:
            truth.abort()
            raise
        # Committed before corpus.json, so a finished corpus always has its truth file; corpus.json
        # records its digest, so read_truth never pairs a corpus with another write's truth.
        writer.meta["synthetic"]["truth"] = truth.close()
        return writer.close()


def read_truth(corpus_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The ground truth of a synthetic corpus (TRUTH_FILE), or None when it has none (an imported
    corpus, or one written before the truth file existed). For analysis only: no command reads
    it as a model input. Raises CpfdError if the file is missing or is not the one corpus.json
    recorded."""
    corpus = Corpus(corpus_dir, verify="fast")
    entry = corpus.meta.get("synthetic", {}).get("truth")
    if entry is None:
        return None
    path = corpus.path / entry["file"]
    if not path.exists():
        raise CpfdError(f"{path}: missing, but corpus.json lists it; rewrite the corpus with cpfd synth")
    if _sha256_of(path) != entry["sha256"]:
        raise CpfdError(f"{path}: not the truth file corpus.json recorded (sha256 differs); rewrite the corpus")
    return pq.read_table(path, columns=None if columns is None else list(columns))


# --------------------------------------------------------------------------------------------
# Sanity check: what an oracle on each view can reach (docs/synthetic.md; not a test)
# --------------------------------------------------------------------------------------------


def _dense_matrix(privileged: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Privileged + non-privileged features for a linear model: signed log1p, NaN -> 0 + indicators.

    An indicator for every column, even one that never goes missing (a constant 0 the scaler
    leaves at 0): the columns must not depend on which rows a split happens to hold.
    """
    x = np.concatenate([privileged, features], axis=1).astype(np.float64)
    missing = np.isnan(x)
    x = np.nan_to_num(x, nan=0.0)
    x = np.sign(x) * np.log1p(np.abs(x))
    return np.concatenate([x, missing.astype(np.float64)], axis=1)


def _rendered_cues(d: dict) -> np.ndarray:
    """What a perfect reader of the rendered frames and text could extract, plus the features:
    key-object shape and hue, its speed, and signal / benign word counts of title and OCR."""
    def count(ids, lengths, lo, hi):
        inside = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        return ((ids >= lo) & (ids < hi) & inside).sum(axis=1)

    hue = 2 * np.pi * _rgb_hue(d["key_color"].astype(np.float64) / 255.0)
    cues = [
        d["key_shape"] == TRIANGLE,
        np.cos(hue),
        np.sin(hue),
        np.linalg.norm(d["key_velocity"], axis=1),
        count(d["title_ids"], d["title_len"], 0, N_SIGNAL),
        count(d["title_ids"], d["title_len"], N_SIGNAL, TOPIC_OFFSET),
        count(d["ocr_ids"], d["ocr_len"], 0, N_SIGNAL),
        count(d["ocr_ids"], d["ocr_len"], N_SIGNAL, TOPIC_OFFSET),
        d["ocr_len"] > 0,
    ]
    return np.concatenate([np.stack(cues, axis=1).astype(np.float64), d["features"]], axis=1)


def _rgb_hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in [0, 1) of (n, 3) RGB values in [0, 1]."""
    r, g, b = rgb.T
    top, bottom = rgb.max(axis=1), rgb.min(axis=1)
    delta = np.where(top > bottom, top - bottom, 1.0)
    h = np.where(top == r, (g - b) / delta, np.where(top == g, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta))
    return np.mod(h / 6.0, 1.0)


def _draw_split(
    spec: PresetSpec, split: str, n: int, seed: int, privileged_strength: float = 1.0, story: str = "latent"
) -> dict:
    """A split's arrays, concatenated over chunks; the story's latents as `latent_<name>`."""
    parts = [
        {
            **{k: v[:rows] for k, v in chunk.items() if isinstance(v, np.ndarray)},
            **{f"latent_{k}": v[:rows] for k, v in chunk["latents"].items()},
        }
        for _, chunk, rows in iter_chunks(spec, split, n, seed, privileged_strength=privileged_strength, story=story)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _all_latents(d: dict) -> np.ndarray:
    return np.stack([v for k, v in d.items() if k.startswith("latent_")], axis=1)


def _dense(d: dict) -> np.ndarray:
    return _dense_matrix(d["privileged"], d["features"])


ORACLE_VIEWS = {
    "dense": _dense,
    "rendered_cues": _rendered_cues,
    "visible_latents": lambda d: d["visible"],
    "visible_latents+dense": lambda d: np.concatenate([d["visible"], _dense(d)], axis=1),
    "all_latents": _all_latents,
    "true_label": lambda d: d["true_label"][:, None].astype(np.float64),
}


def oracle_aucs(
    preset: str,
    n_train: int = 20_000,
    n_eval: int = 20_000,
    seed: int = 0,
    *,
    privileged_strength: float = 1.0,
    story: str = "latent",
    views: Sequence[str] | None = None,
) -> dict:
    """ROC AUC and PR AUC (average precision) on eval, against the stored (noisy) labels, of a
    logistic regression fitted on train on each view (ORACLE_VIEWS; default all but true_label):

    - dense: the privileged + non-privileged features (what the teacher's dense branch gets)
    - rendered_cues: the cues the frames and text were rendered from (key-object shape, hue and
      speed; signal and benign word counts) + the non-privileged features: a student that reads
      its inputs perfectly, with a linear head
    - visible_latents: the three visible latents themselves; the logit is linear in them, so this
      is the ROC ceiling of any model on frames + text + non-privileged features
    - visible_latents+dense: a teacher that read frames and text perfectly
    - all_latents: all the story's latents (latent story: the Bayes ceiling, what label noise and
      randomness leave; consequence story: the label's causes, which a teacher whose features
      react to the true label can beat)
    - true_label: the label before the rater's flips (the ceiling of any model)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = get_preset(preset)
    privileged_strength = check_story(story, privileged_strength)
    names = [v for v in ORACLE_VIEWS if v != "true_label"] if views is None else list(views)
    unknown = [v for v in names if v not in ORACLE_VIEWS]
    if unknown:
        raise CpfdError(f"unknown oracle view(s) {unknown}; expected some of {list(ORACLE_VIEWS)}")
    draw = {"privileged_strength": privileged_strength, "story": story}
    train, evals = _draw_split(spec, "train", n_train, seed, **draw), _draw_split(spec, "eval", n_eval, seed, **draw)
    result = {"preset": preset, "story": story, "privileged_strength": privileged_strength,
              "eval_positive_rate": float(evals["label"].mean())}
    for name in names:
        view = ORACLE_VIEWS[name]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(view(train), train["label"])
        score = model.predict_proba(view(evals))[:, 1]
        result[name] = {
            "roc_auc": float(roc_auc_score(evals["label"], score)),
            "pr_auc": float(average_precision_score(evals["label"], score)),
        }
    return result


STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)  # the doc's strength table
STRENGTH_PRESETS = ("task1", "task5")
STRENGTH_VIEWS = ("visible_latents", "dense", "visible_latents+dense", "all_latents", "true_label")


def _row(r: dict, names) -> str:
    return " | ".join(f"{r[k]['roc_auc']:.3f} ({r[k]['pr_auc']:.3f})" for k in names)


def main(argv: list[str] | None = None) -> None:
    """`python -m cpfd.experiment.synth [n_train n_eval seed]`: the per-preset oracle table of
    docs/synthetic.md; `python -m cpfd.experiment.synth strengths [n_train n_eval seed]`: the
    per-story, per-strength table (STRENGTH_PRESETS x STORIES x STRENGTHS)."""
    argv = sys.argv[1:] if argv is None else argv
    strengths = bool(argv) and argv[0] == "strengths"
    argv = argv[1:] if strengths else argv
    n_train, n_eval, seed = (int(a) for a in (argv + ["20000", "20000", "0"][len(argv):])[:3])
    print(f"oracle logistic regressions, {n_train} train / {n_eval} eval rows, seed {seed}; ROC AUC (PR AUC)")
    if strengths:
        names = list(STRENGTH_VIEWS)
        print("| preset | story | strength | eval pos. rate | " + " | ".join(names) + " |")
        print("| --- | --- | ---: | --- | " + " | ".join("---" for _ in names) + " |")
        for preset in STRENGTH_PRESETS:
            for story in STORIES:
                for strength in STRENGTHS:
                    r = oracle_aucs(preset, n_train, n_eval, seed, privileged_strength=strength, story=story,
                                    views=names)
                    rate = r["eval_positive_rate"]
                    print(f"| {preset} | {story} | {strength:g} | {rate:.3f} | {_row(r, names)} |", flush=True)
        return
    names = ["dense", "rendered_cues", "visible_latents", "visible_latents+dense", "all_latents"]
    print("| preset | eval pos. rate | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for preset in PRESETS:
        r = oracle_aucs(preset, n_train, n_eval, seed, views=names)
        print(f"| {preset} | {r['eval_positive_rate']:.3f} | {_row(r, names)} |")


if __name__ == "__main__":
    main()
