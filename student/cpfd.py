"""The CPFD loss and the alpha mappings (paper sections 3.3-3.4, Table 2; docs/method.md).

Three groups of small pure functions, used by `cpfd distill`, `cpfd calibrate` and the training loop:

- alpha mappings: `alpha_from_loss(teacher_loss, mapping, **params)` turns per-sample teacher losses
  `L_i = -log softmax(teacher_logits_i)[label_i]` into distillation weights `a_i` in [0, 1]. Every
  mapping is non-increasing in the loss: trust the teacher less where its own loss is high.
  `MAPPINGS`, `MAPPING_PARAMS`, `MAPPING_DEFAULTS` (from `student.mappings`, torch-free, which the
  CLI builds its options from) and `validate_params` describe and check the parameters.
- the loss: `cpfd_loss(student_logits, teacher_logits, labels, alpha, temperature)` is
  `mean_i[(1 - a_i) * CE_i + a_i * T^2 * KL(softmax(t_i / T) || softmax(s_i / T))]`; with a constant
  alpha it is vanilla PFD, i.e. Hinton KD with `batchmean` KL. `cpfd_loss_terms` gives the per-sample
  CE and KL for logging.
- calibration: `calibrate_params` picks mapping parameters from the teacher-loss distribution (its
  quantiles `QUANTILES`) when the user gives none; `resolve_params` fills only what was not given.

Usage:

    params = resolve_params("neg-sigmoid", {"beta": None, "center": None}, train_teacher_losses)
    alpha = alpha_from_loss(batch_teacher_loss, "neg-sigmoid", **params)      # (B,)
    loss = cpfd_loss(out.logits, batch_teacher_logits, labels, alpha, temperature=2.0)

Invalid parameters raise `CpfdParamError`, a `ValueError` (and a `CpfdError`, so the CLI prints it as
one `error: ...` line) whose message names the parameter. This module never imports `teacher`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cpfd.storage.errors import CpfdError
from cpfd.student.mappings import (  # noqa: F401 (re-exported)
    MAPPING_DEFAULTS,
    MAPPING_PARAMS,
    MAPPINGS,
    PARAM_HELP,
    RULE_CONSTANTS,
)


class CpfdParamError(CpfdError, ValueError):
    """A bad mapping name, mapping parameter, temperature or loss input; the message names it."""


# ----------------------------------------------------------------------------------------------
# Parameters (their names, defaults and descriptions: `student.mappings`, re-exported here)


def _fmt(value: float) -> str:
    return f"{value:.12g}"


def _check_mapping(mapping: str) -> None:
    if mapping not in MAPPINGS:
        raise CpfdParamError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")


def _as_number(name: str, value: Any) -> float:
    """`value` as a finite float, or an error naming `name`. Booleans and strings are refused (likely slips)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise CpfdParamError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CpfdParamError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise CpfdParamError(f"{name} must be finite, got {_fmt(number)}")
    return number


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise CpfdParamError(f"{name} must be in [0, 1], got {_fmt(value)}")


def _check_names(mapping: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The parameter names of `mapping`; the one check that every name given (not None) is one of them
    (`cpfd distill` passes its options here too: `--tau` with `--mapping constant` is `tau`)."""
    _check_mapping(mapping)
    names = MAPPING_PARAMS[mapping]
    unknown = sorted(k for k, v in params.items() if v is not None and k not in names)
    if unknown:
        raise CpfdParamError(f"{', '.join(unknown)} does not apply to mapping {mapping} "
                             f"(it takes {', '.join(names)})")
    return names


def validate_params(mapping: str, params: Mapping[str, Any]) -> dict[str, float]:
    """Check the parameters of `mapping` and return them resolved: floats, defaults filled in.

    A value of None counts as not given (what a CLI option left out passes). Raises `CpfdParamError`
    (a ValueError) naming the parameter for: an unknown mapping, an unknown parameter name, a missing
    required parameter, a non-finite value, an alpha outside [0, 1] (`alpha`, `alpha_high`,
    `alpha_low`, `alpha_min`, `alpha_max`), `alpha_high < alpha_low` (threshold must not increase),
    a negative `beta`, a non-positive `alpha_min` or `alpha_min > alpha_max` (exp-decay), and
    `loss_max <= loss_min`.
    """
    names = _check_names(mapping, params)
    given = {k: v for k, v in params.items() if v is not None}
    resolved = {**MAPPING_DEFAULTS.get(mapping, {}), **given}
    missing = [n for n in names if n not in resolved]
    if missing:
        raise CpfdParamError(f"mapping {mapping} needs {', '.join(missing)} (missing)")
    p = {n: _as_number(n, resolved[n]) for n in names}

    if mapping == "constant":
        _check_unit("alpha", p["alpha"])
    elif mapping == "threshold":
        _check_unit("alpha_high", p["alpha_high"])
        _check_unit("alpha_low", p["alpha_low"])
        if p["alpha_high"] < p["alpha_low"]:
            raise CpfdParamError(
                f"alpha_high must be >= alpha_low (alpha falls as the loss rises), "
                f"got alpha_high {_fmt(p['alpha_high'])} < alpha_low {_fmt(p['alpha_low'])}"
            )
    elif mapping in ("neg-sigmoid", "tanh"):
        if p["beta"] < 0:
            raise CpfdParamError(f"beta must be >= 0 for {mapping} (alpha falls as the loss rises), got {_fmt(p['beta'])}")
    else:  # exp-decay
        if p["alpha_min"] <= 0:
            raise CpfdParamError(f"alpha_min must be positive for exp-decay, got {_fmt(p['alpha_min'])}")
        _check_unit("alpha_min", p["alpha_min"])
        _check_unit("alpha_max", p["alpha_max"])
        if p["alpha_min"] > p["alpha_max"]:
            raise CpfdParamError(
                f"alpha_min must be <= alpha_max for exp-decay, "
                f"got alpha_min {_fmt(p['alpha_min'])} > alpha_max {_fmt(p['alpha_max'])}"
            )
        if p["loss_max"] <= p["loss_min"]:
            raise CpfdParamError(
                f"loss_max must be greater than loss_min for exp-decay, "
                f"got loss_max {_fmt(p['loss_max'])} <= loss_min {_fmt(p['loss_min'])}"
            )
    return p


# ----------------------------------------------------------------------------------------------
# Alpha mappings (paper Table 2), on a float tensor of teacher losses L. Each returns a in [0, 1].


def _constant(L: torch.Tensor, alpha: float) -> torch.Tensor:
    """a = alpha (vanilla PFD)."""
    return torch.full_like(L, alpha)


def _threshold(L: torch.Tensor, tau: float, alpha_high: float, alpha_low: float) -> torch.Tensor:
    """a = alpha_high if L < tau else alpha_low; a loss exactly at tau gets alpha_low."""
    return torch.where(L < tau, torch.full_like(L, alpha_high), torch.full_like(L, alpha_low))


def _neg_sigmoid(L: torch.Tensor, beta: float, center: float) -> torch.Tensor:
    """a = 1 / (1 + exp(beta * (L - center))); 0.5 at the center. torch.sigmoid never overflows.
    beta 0 is 0.5 everywhere, also where L - center overflows to inf (0 * inf would be nan)."""
    if beta == 0:
        return torch.full_like(L, 0.5)
    return torch.sigmoid(-beta * (L - center))


def _tanh(L: torch.Tensor, beta: float, center: float) -> torch.Tensor:
    """a = 0.5 * (tanh(-beta * (L - center)) + 1); 0.5 at the center. Equals neg-sigmoid with 2*beta."""
    if beta == 0:  # as in _neg_sigmoid
        return torch.full_like(L, 0.5)
    return 0.5 * (torch.tanh(-beta * (L - center)) + 1.0)


def _exp_decay(L: torch.Tensor, alpha_min: float, alpha_max: float, loss_min: float, loss_max: float) -> torch.Tensor:
    """a = alpha_max * exp(-k * (L - loss_min)), k = -log(alpha_min / alpha_max) / (loss_max - loss_min),
    clamped to [alpha_min, alpha_max]: alpha_max at and below loss_min, alpha_min at and above loss_max.

    Written as alpha_max * (alpha_min / alpha_max) ** t with t = (L - loss_min) / (loss_max - loss_min)
    clamped to [0, 1] (the same thing, since the curve is monotone), so exp never overflows for losses
    far below loss_min; the ends are pinned to exactly alpha_max and alpha_min. When loss_max - loss_min
    overflows float64 (e.g. -1e308 and 1e308), t is computed from halved values (inf / inf would be nan).
    """
    h = 0.5 if math.isinf(loss_max - loss_min) else 1.0
    t = ((L * h - loss_min * h) / (loss_max * h - loss_min * h)).clamp(0.0, 1.0)
    a = alpha_max * torch.exp(math.log(alpha_min / alpha_max) * t)  # exactly alpha_max at t = 0
    # alpha_max * (alpha_min / alpha_max) rounds to a hair above alpha_min: pin the far end
    return torch.where(t >= 1.0, torch.full_like(a, alpha_min), a.clamp(alpha_min, alpha_max))


_MAPPING_FNS = {
    "constant": _constant,
    "threshold": _threshold,
    "neg-sigmoid": _neg_sigmoid,
    "tanh": _tanh,
    "exp-decay": _exp_decay,
}


def _as_stored(mapping: str, p: dict, narrow: bool) -> dict:
    """The parameters a mapping compares losses stored in less than float64 (`narrow`) with: threshold's
    tau rounded to float32, as the dump stores losses, so that a stored loss of float32(tau) gets
    alpha_low like the float64 loss tau itself (a tau beyond float32 becomes inf)."""
    if mapping != "threshold" or not narrow:
        return p
    return dict(p, tau=torch.tensor(p["tau"], dtype=torch.float32).item())


def _alpha(mapping: str, p: dict, L: torch.Tensor, narrow: bool) -> torch.Tensor:
    """alpha in [0, 1], float64, of float64 losses L (that were `narrow` floats before)."""
    return _MAPPING_FNS[mapping](L, **_as_stored(mapping, p, narrow)).clamp(0.0, 1.0)


# The per-row signal a mapping reads (`distill --confidence`), high = the teacher is unsure there.
CONFIDENCES = ("loss", "entropy", "margin")


def confidence_signal(confidence: str, teacher_loss, teacher_logits):
    """The signal `confidence` of each row, high where the teacher is unsure; numpy in, numpy out
    (float32), torch in, torch out:

      loss     the teacher's cross-entropy against the stored label (the paper's signal)
      entropy  H(softmax(z)) / log(C): the entropy of the teacher's prediction, in [0, 1]; no label
      margin   1 - (p_top1 - p_top2): one minus the gap between its two likeliest classes, in [0, 1]; no label

    teacher_loss (N,), teacher_logits (N, C) (unused by `loss`)."""
    if confidence not in CONFIDENCES:
        raise CpfdError(f"--confidence must be one of {', '.join(CONFIDENCES)}, got {confidence!r}")
    if confidence == "loss":
        return teacher_loss
    as_numpy = not isinstance(teacher_logits, torch.Tensor)
    z = torch.from_numpy(np.array(teacher_logits, dtype=np.float32)) if as_numpy else teacher_logits.float()  # (N, C)
    if z.ndim != 2 or z.shape[1] < 2:
        raise CpfdError(f"expected teacher logits of shape (N, C) with C >= 2, got {tuple(z.shape)}")
    log_p = F.log_softmax(z, dim=-1)
    p = log_p.exp()
    if confidence == "entropy":
        signal = -(torch.where(p > 0, p * log_p, torch.zeros_like(p))).sum(-1) / math.log(z.shape[1])
    else:
        top = p.topk(2, dim=-1).values
        signal = 1.0 - (top[:, 0] - top[:, 1])
    signal = signal.clamp(0.0, 1.0)
    return signal.numpy().astype(np.float32) if as_numpy else signal


def alpha_from_loss(teacher_loss, mapping: str, **params):
    """Per-sample distillation weight a_i from the teacher loss L_i, by one of `MAPPINGS`.

    Formulas (docs/method.md, "The five mappings"; paper Table 2), each non-increasing in L and within [0, 1]:
      constant:    a = alpha
      threshold:   a = alpha_high if L < tau else alpha_low     (L == tau -> alpha_low)
      neg-sigmoid: a = 1 / (1 + exp(beta * (L - center)))      (L == center -> 0.5)
      tanh:        a = 0.5 * (tanh(-beta * (L - center)) + 1)   (L == center -> 0.5)
      exp-decay:   a = alpha_max * exp(-k * (L - loss_min)),  k = -log(alpha_min / alpha_max) / (loss_max - loss_min),
                   clamped to [alpha_min, alpha_max]            (L <= loss_min -> alpha_max, L >= loss_max -> alpha_min)

    teacher_loss: any shape, e.g. (B,). A torch tensor gives a tensor on the same device, with its
    dtype if floating, else float32; anything else (numpy array, list, float) gives a numpy array,
    float64 unless the input was a numpy float array of another precision. Computed in float64
    whatever the input: the parameters are float64 and may not fit float32 (a center of 1e39 or a
    loss range of 1e-40 would give nan); threshold compares losses that are floats narrower than
    float64 with tau rounded to float32 (`_as_stored`). The result carries no gradient.
    params: the mapping's parameters, see `MAPPING_PARAMS` / `validate_params`.
    Raises `CpfdParamError` (a ValueError) for bad parameters and for NaN or infinite losses.
    """
    p = validate_params(mapping, params)
    if isinstance(teacher_loss, torch.Tensor):
        out_dtype = teacher_loss.dtype if teacher_loss.is_floating_point() else torch.get_default_dtype()
        L = teacher_loss.detach().to(torch.float64)  # (B,) values: float64 costs nothing next to a forward pass
        narrow = teacher_loss.is_floating_point() and teacher_loss.dtype != torch.float64
    else:
        array = np.asarray(teacher_loss)
        out_dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)
        try:
            L = torch.from_numpy(np.array(array, dtype=np.float64))  # a copy: the caller's array stays put
        except (TypeError, ValueError):
            raise CpfdParamError(f"teacher_loss must hold numbers, got dtype {array.dtype}") from None
        narrow = np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize < 8
    _check_finite_losses(L)
    alpha = _alpha(mapping, p, L, narrow)
    if isinstance(teacher_loss, torch.Tensor):
        return alpha.to(out_dtype)
    return alpha.numpy().astype(out_dtype, copy=False)


def alpha_function(mapping: str, **params):
    """`alpha_from_loss` with the parameters validated once, for the training step: a function from a
    float tensor of teacher losses (B,) to alpha (B,) in [0, 1], float32, on the losses' device
    (computed in float64, like `alpha_from_loss`, so extreme parameters never give NaN).

    It does not check the losses for NaN (that would cost a device sync per step): a dump's
    `verify()` proves them finite before training starts.
    """
    p = validate_params(mapping, params)

    def alpha(teacher_loss: torch.Tensor) -> torch.Tensor:
        return _alpha(mapping, p, teacher_loss.detach().double(), teacher_loss.dtype != torch.float64).float()

    return alpha


def _check_finite_losses(L: torch.Tensor) -> None:
    bad = int((~torch.isfinite(L)).sum())  # one device sync per batch: cheap next to a forward pass
    if bad:
        raise CpfdParamError(
            f"teacher_loss must be finite, got {bad} NaN or infinite value(s) (a valid teacher dump has none)"
        )


# ----------------------------------------------------------------------------------------------
# The loss (paper eq. 1-4)


class LossTerms(NamedTuple):
    """Per-sample terms of the CPFD loss, both (B,) float: loss_i = (1 - a_i) * ce_i + a_i * T^2 * kl_i."""

    ce: torch.Tensor  # CE(s_i, y_i) at T = 1
    kl: torch.Tensor  # KL(softmax(t_i / T) || softmax(s_i / T)), without the T^2 factor


def _check_temperature(temperature: Any) -> float:
    T = _as_number("temperature", temperature)
    if T <= 0:
        raise CpfdParamError(f"temperature must be positive, got {_fmt(T)}")
    return T


def _float32_at_least(x: torch.Tensor) -> torch.Tensor:
    # float32 even under autocast (half-precision softmax loses the small teacher probabilities);
    # float64 stays float64 so tests can gradcheck.
    return x if x.dtype == torch.float64 else x.float()


def cpfd_loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float = 1.0) -> LossTerms:
    """Per-sample cross-entropy and distillation KL.

    student_logits, teacher_logits: (B, C); labels: (B,) int64 class indices.
      ce_i = -log softmax(s_i)[y_i]
      kl_i = sum_c p_t,c * (log p_t,c - log p_s,c),  p_t = softmax(t_i / T), p_s = softmax(s_i / T)
    Both from log_softmax; a class with p_t == 0 contributes 0 (p log p -> 0). Teacher logits are
    detached: gradients reach the student only. Returns `LossTerms(ce, kl)`, each (B,) float32
    (float64 for float64 logits).
    """
    T = _check_temperature(temperature)
    if student_logits.ndim != 2:
        raise CpfdParamError(f"expected student_logits of shape (B, C), got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise CpfdParamError(
            f"expected teacher_logits of shape {tuple(student_logits.shape)} like student_logits, "
            f"got {tuple(teacher_logits.shape)}"
        )
    if labels.shape != student_logits.shape[:1]:
        raise CpfdParamError(f"expected labels of shape ({student_logits.shape[0]},), got {tuple(labels.shape)}")

    s = _float32_at_least(student_logits)                               # (B, C)
    t = _float32_at_least(teacher_logits.detach()).to(s.dtype)          # (B, C)
    ce = F.cross_entropy(s, labels, reduction="none")                   # (B,)
    log_ps = F.log_softmax(s / T, dim=-1)                               # (B, C)
    log_pt = F.log_softmax(t / T, dim=-1)                               # (B, C)
    p_t = log_pt.exp()                                                  # (B, C)
    # where, not a plain product: a teacher logit of -inf gives p_t = 0 and log p_t = -inf (0 * -inf = nan)
    kl = torch.where(p_t > 0, p_t * (log_pt - log_ps), torch.zeros_like(log_ps)).sum(-1)  # (B,)
    return LossTerms(ce, kl)


def weigh_terms(ce: torch.Tensor, kl: torch.Tensor, alpha, temperature: float) -> torch.Tensor:
    """(1 - a) * CE + a * T^2 * KL, per sample: the CPFD loss from its terms (`cpfd_loss_terms`)."""
    return (1 - alpha) * ce + alpha * (temperature * temperature) * kl


def cpfd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              alpha: float | torch.Tensor, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """The CPFD student loss: mean_i[(1 - a_i) * CE_i + a_i * T^2 * KL(softmax(t_i/T) || softmax(s_i/T))].

    student_logits, teacher_logits: (B, C); labels: (B,) int64.
    alpha: a float in [0, 1] (vanilla PFD: then this equals Hinton KD,
      `(1-a) * F.cross_entropy(s, y) + a * T^2 * F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction="batchmean")`)
      or a per-sample tensor (B,) (CPFD, from `alpha_from_loss`; values are trusted, not re-checked,
      to avoid a device sync; it is detached: alpha weighs the terms, it is not learned).
      alpha 0 is plain cross-entropy (the baseline); alpha 1 is pure distillation.
    temperature: T > 0, softens both distributions; T^2 keeps the KL gradients on the CE scale.
    reduction: "mean" (scalar, default), "sum" (scalar) or "none" (B,).
    Computed in float32 (float64 for float64 logits), also under autocast. An empty batch gives a
    zero that is still attached to student_logits' graph, not nan.
    """
    if reduction not in ("mean", "sum", "none"):
        raise CpfdParamError(f"reduction must be one of mean, sum, none, got {reduction!r}")
    ce, kl = cpfd_loss_terms(student_logits, teacher_logits, labels, temperature)
    T = _check_temperature(temperature)
    if isinstance(alpha, torch.Tensor):
        if alpha.ndim not in (0, 1) or (alpha.ndim == 1 and alpha.shape != ce.shape):
            raise CpfdParamError(f"expected alpha as a float or of shape ({ce.shape[0]},), got {tuple(alpha.shape)}")
        a = alpha.detach().to(device=ce.device, dtype=ce.dtype)        # (B,) or ()
    else:
        a = _as_number("alpha", alpha)
        _check_unit("alpha", a)
    per_sample = weigh_terms(ce, kl, a, T)                              # (B,)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    # sum / B rather than .mean(): an empty batch gives 0 (with a grad_fn), not nan
    return per_sample.sum() / max(per_sample.shape[0], 1)


# ----------------------------------------------------------------------------------------------
# Calibration: parameters from the teacher-loss distribution when the user gives none

# The quantiles the rule reads; `cpfd inspect` / `calibrate` may compute them in DuckDB
# (`quantile_cont`, linear interpolation like numpy's default) and pass the dict instead of losses.
QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)

# Keeps beta finite and loss_max > loss_min when the losses barely spread (e.g. all equal).
CALIBRATION_EPS = 1e-6


def quantiles_of(losses) -> dict[float, float]:
    """{q: quantile} for q in `QUANTILES` of a 1-D array of teacher losses (numpy, linear interpolation)."""
    array = np.asarray(losses, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise CpfdParamError("losses must not be empty (no teacher losses to calibrate from)")
    if not np.isfinite(array).all():
        raise CpfdParamError(f"losses must be finite, got {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    values = np.quantile(array, QUANTILES)
    return {q: float(v) for q, v in zip(QUANTILES, values)}


def _quantile_table(losses_or_quantiles) -> dict[float, float]:
    if not isinstance(losses_or_quantiles, Mapping):
        return quantiles_of(losses_or_quantiles)
    table = {round(float(q), 6): _as_number(f"quantile {q}", v) for q, v in losses_or_quantiles.items()}
    missing = [q for q in QUANTILES if q not in table]
    if missing:
        raise CpfdParamError(f"quantiles lack {', '.join(str(q) for q in missing)} (need {', '.join(map(str, QUANTILES))})")
    values = [table[q] for q in QUANTILES]
    if any(b < a for a, b in zip(values, values[1:])):
        raise CpfdParamError(f"quantiles must not decrease with q, got {dict(zip(QUANTILES, values))}")
    return {q: table[q] for q in QUANTILES}


def calibrate_params(losses_or_quantiles, mapping: str) -> dict[str, float]:
    """All parameters of `mapping` from the teacher-loss distribution: the rule `cpfd calibrate` prints.

    losses_or_quantiles: a 1-D array of teacher losses, or a dict {q: value} for q in `QUANTILES`
    (e.g. from DuckDB). With q05..q95 the quantiles and eps = `CALIBRATION_EPS`:
      constant:    alpha = 0.5
      threshold:   tau = q50 (half the samples on each side), alpha_high = 0.9, alpha_low = 0.1 (paper)
      neg-sigmoid: center = q50, beta = 4 / max(q90 - q10, eps)
      tanh:        center = q50, beta = 4 / max(q90 - q10, eps)
      exp-decay:   loss_min = q05, loss_max = max(q95, q05 + eps), alpha_max = 0.9, alpha_min = 0.1
    Why these betas: for neg-sigmoid the log-odds, log(a / (1 - a)) = -4 (L - q50) / (q90 - q10),
    fall by exactly 4 between q10 and q90. When the median sits midway between q10 and q90 (a
    symmetric distribution) alpha runs from 1 / (1 + e^-2) = 0.881 at q10 to 1 / (1 + e^2) = 0.119 at
    q90 across the central 80% of samples; for the usual right-skewed teacher losses the median is
    nearer q10, so alpha at q10 is nearer 0.5 and alpha at q90 nearer 0.
    tanh gets the same beta. Since 0.5 * (tanh(x) + 1) = sigmoid(2x), tanh with beta is neg-sigmoid
    with 2 * beta: with one shared beta the two mappings are the same curve at two steepnesses
    (tanh's log-odds fall by 8 between q10 and q90), rather than one curve calibrated twice.
    Exp-decay likewise spans alpha 0.9 -> 0.1 over the central 90%, clamped outside.
    """
    _check_mapping(mapping)
    if mapping == "constant":
        return {"alpha": RULE_CONSTANTS["alpha"]}
    if mapping == "exp-decay":
        q = _quantile_table(losses_or_quantiles)
        return {"alpha_min": RULE_CONSTANTS["alpha_min"], "alpha_max": RULE_CONSTANTS["alpha_max"], "loss_min": q[0.05],
                "loss_max": max(q[0.95], q[0.05] + CALIBRATION_EPS)}
    q = _quantile_table(losses_or_quantiles)
    if mapping == "threshold":
        return {"tau": q[0.5], "alpha_high": 0.9, "alpha_low": 0.1}
    spread = max(q[0.9] - q[0.1], CALIBRATION_EPS)
    return {"beta": 4.0 / spread, "center": q[0.5]}


def resolve_params(mapping: str, given: Mapping[str, Any], losses_or_quantiles=None) -> dict[str, float]:
    """The parameters to train with: those in `given` (None = not given), the rest from `calibrate_params`.

    losses_or_quantiles (teacher losses or their quantile dict) is only read when something is
    missing; it may be None when every parameter is given. Returns `validate_params`'s dict, so a
    given value that clashes with a calibrated one (e.g. loss_max below the calibrated loss_min) is
    reported by name.
    """
    _check_names(mapping, given)
    given = {k: v for k, v in given.items() if v is not None}
    # optional parameters left out take their defaults (the same values the rule would pick)
    missing = [n for n in MAPPING_PARAMS[mapping] if n not in given and n not in MAPPING_DEFAULTS.get(mapping, {})]
    if not missing:
        return validate_params(mapping, given)
    if losses_or_quantiles is None and mapping != "constant":  # constant's rule reads no losses
        raise CpfdParamError(
            f"mapping {mapping} needs {', '.join(missing)}: give them, or teacher losses to calibrate from"
        )
    calibrated = calibrate_params(losses_or_quantiles, mapping)
    return validate_params(mapping, {**{n: calibrated[n] for n in missing}, **given})
