"""student/cpfd.py: the CPFD loss, the alpha mappings and the calibration rule, against hand-computed
values and references, and property tests (hypothesis): alpha and the loss stay finite and in range
for any valid input."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cpfd.student import cpfd
from cpfd.student.cpfd import (
    MAPPING_DEFAULTS,
    MAPPING_PARAMS,
    MAPPINGS,
    QUANTILES,
    alpha_from_loss,
    calibrate_params,
    cpfd_loss,
    cpfd_loss_terms,
    quantiles_of,
    resolve_params,
    validate_params,
)
from cpfd.storage.errors import CpfdError

EXAMPLE_PARAMS = {
    "constant": {"alpha": 0.3},
    "threshold": {"tau": 0.7, "alpha_high": 0.8, "alpha_low": 0.2},
    "neg-sigmoid": {"beta": 3.0, "center": 0.7},
    "tanh": {"beta": 1.5, "center": 0.7},
    "exp-decay": {"alpha_min": 0.1, "alpha_max": 0.9, "loss_min": 0.2, "loss_max": 1.2},
}


def hinton_kd(s, t, y, alpha, T):
    """The textbook reference: vanilla PFD with a constant alpha, batchmean KL."""
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(s, y) + alpha * T**2 * kl


def reference_terms(s, t, y, T):
    """Per-sample CE and KL written out from the definitions, in float64."""
    s, t = s.double(), t.double()
    ce = -torch.log_softmax(s, -1).gather(1, y[:, None])[:, 0]
    p_t = torch.softmax(t / T, -1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, -1))).sum(-1)
    return ce, kl


def batch(B=6, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, C, generator=g) * 2
    t = torch.randn(B, C, generator=g) * 2
    y = torch.randint(0, C, (B,), generator=g)
    return s, t, y


# ----------------------------------------------------------------------------------------------
# The loss


def test_hand_computed_two_class_example():
    # one sample, two classes: s = (0, 1), t = (2, 0), y = 0, T = 2, alpha = 0.25
    a, T = 0.25, 2.0
    ce = -math.log(math.exp(0) / (math.exp(0) + math.exp(1)))               # log(1 + e)
    p_t = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]           # softmax((1, 0))
    p_s = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]     # softmax((0, 0.5))
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = (1 - a) * ce + a * T**2 * kl
    assert ce == pytest.approx(math.log(1 + math.e))

    loss = cpfd_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0]), a, T)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    ce_t, kl_t = cpfd_loss_terms(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0]), T)
    assert ce_t.item() == pytest.approx(ce, rel=1e-6) and kl_t.item() == pytest.approx(kl, rel=1e-5)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_constant_alpha_is_hinton_kd(T, alpha):
    s, t, y = batch(B=8, C=5, seed=int(T * 10))
    got = cpfd_loss(s, t, y, alpha, temperature=T)
    torch.testing.assert_close(got, hinton_kd(s, t, y, alpha, T), rtol=1e-5, atol=1e-6)
    # a 0-d tensor alpha and a (B,) tensor filled with it are the same thing
    torch.testing.assert_close(cpfd_loss(s, t, y, torch.tensor(alpha), T), got)
    torch.testing.assert_close(cpfd_loss(s, t, y, torch.full((8,), alpha), T), got, rtol=1e-6, atol=1e-6)


def test_per_sample_alpha_is_mean_of_reference_terms():
    s, t, y = batch(B=7, C=3, seed=3)
    alpha = torch.linspace(0, 1, 7)
    T = 3.0
    ce, kl = reference_terms(s, t, y, T)
    per_sample = (1 - alpha.double()) * ce + alpha.double() * T**2 * kl
    torch.testing.assert_close(cpfd_loss(s, t, y, alpha, T).double(), per_sample.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cpfd_loss(s, t, y, alpha, T, reduction="sum").double(), per_sample.sum(),
                               rtol=1e-5, atol=1e-6)
    none = cpfd_loss(s, t, y, alpha, T, reduction="none")
    assert none.shape == (7,)
    torch.testing.assert_close(none.double(), per_sample, rtol=1e-5, atol=1e-6)
    terms = cpfd_loss_terms(s, t, y, T)
    torch.testing.assert_close(terms.ce.double(), ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.kl.double(), kl, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_cross_entropy_and_one_is_scaled_kl():
    s, t, y = batch(seed=5)
    T = 2.5
    torch.testing.assert_close(cpfd_loss(s, t, y, 0.0, T), F.cross_entropy(s, y))
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(cpfd_loss(s, t, y, 1.0, T), T**2 * kl)
    # alpha 1 ignores the labels entirely
    torch.testing.assert_close(cpfd_loss(s, t, y, 1.0, T), cpfd_loss(s, t, (y + 1) % 4, 1.0, T))


def test_loss_is_zero_when_student_matches_teacher_and_alpha_is_one():
    s, _, y = batch(seed=6)
    assert cpfd_loss(s, s.clone(), y, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_extreme_logits_give_finite_loss_and_gradients(T):
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, -1e4], [1e4, -1e4, -1e4], [1e4, 0.0, -1e4]])  # (near) one-hot teacher
    y = torch.tensor([1, 0, 2])
    loss = cpfd_loss(s, t, y, torch.tensor([0.5, 0.9, 0.1]), T)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(s.grad).all()


def test_teacher_probabilities_of_exactly_zero_contribute_nothing():
    # a -inf teacher logit gives p_t = 0 and log p_t = -inf: 0 * log 0 must count as 0, not nan
    s = torch.tensor([[0.5, -0.5, 1.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -math.inf]])
    loss = cpfd_loss(s, t, torch.tensor([0]), 1.0)
    loss.backward()
    p_t = torch.softmax(t[:, :2], -1)
    expected = (p_t * (p_t.log() - torch.log_softmax(s.detach(), -1)[:, :2])).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_gives_zero_attached_to_the_graph(reduction):
    s = torch.zeros(0, 3, requires_grad=True)
    loss = cpfd_loss(s, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0), 2.0, reduction)
    assert loss.shape == () and loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert s.grad.shape == (0, 3)
    assert cpfd_loss(s, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 0.5, reduction="none").shape == (0,)


def test_gradients_reach_the_student_only():
    s, t, y = batch(seed=7)
    s.requires_grad_(True)
    t.requires_grad_(True)
    alpha = torch.full((6,), 0.5, requires_grad=True)
    cpfd_loss(s, t, y, alpha, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and alpha.grad is None


def test_gradcheck_in_float64():
    s, t, y = batch(B=3, C=3, seed=8)
    s = s.double().requires_grad_(True)
    alpha = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    assert cpfd_loss(s, t.double(), y, alpha, 2.0).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: cpfd_loss(x, t.double(), y, alpha, 2.0), (s,))


def test_half_precision_logits_are_computed_in_float32():
    s, t, y = batch(seed=9)
    got = cpfd_loss(s.half(), t.bfloat16(), y, 0.5, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, hinton_kd(s.half().float(), t.bfloat16().float(), y, 0.5, 2.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpfd_loss(s, t, y, 0.5, 2.0).dtype == torch.float32


@pytest.mark.parametrize("temperature", [0, -1.0, math.nan, math.inf, "2", True])
def test_bad_temperature_is_refused(temperature):
    s, t, y = batch()
    with pytest.raises(ValueError, match="temperature"):
        cpfd_loss(s, t, y, 0.5, temperature)


def test_bad_loss_inputs_are_refused():
    s, t, y = batch()
    with pytest.raises(ValueError, match="alpha"):
        cpfd_loss(s, t, y, 1.5)
    with pytest.raises(ValueError, match="alpha"):
        cpfd_loss(s, t, y, torch.zeros(5))
    with pytest.raises(ValueError, match="teacher_logits"):
        cpfd_loss(s, t[:, :3], y, 0.5)
    with pytest.raises(ValueError, match="labels"):
        cpfd_loss(s, t, y[:3], 0.5)
    with pytest.raises(ValueError, match="student_logits"):
        cpfd_loss(s[0], t[0], y[:1], 0.5)
    with pytest.raises(ValueError, match="reduction"):
        cpfd_loss(s, t, y, 0.5, reduction="batchmean")


# ----------------------------------------------------------------------------------------------
# The mappings


def test_mapping_tables_agree():
    assert set(MAPPINGS) == set(MAPPING_PARAMS)
    for mapping, defaults in MAPPING_DEFAULTS.items():
        assert set(defaults) <= set(MAPPING_PARAMS[mapping])
    assert validate_params("threshold", {"tau": 1}) == {"tau": 1.0, "alpha_high": 0.9, "alpha_low": 0.1}


def test_hand_computed_mapping_values():
    L = np.array([0.0, 0.7, 1.2])
    np.testing.assert_allclose(alpha_from_loss(L, "constant", alpha=0.3), [0.3, 0.3, 0.3])
    np.testing.assert_allclose(alpha_from_loss(L, **{"mapping": "threshold", **EXAMPLE_PARAMS["threshold"]}),
                               [0.8, 0.2, 0.2])
    np.testing.assert_allclose(alpha_from_loss(L, "neg-sigmoid", beta=3.0, center=0.7),
                               [1 / (1 + math.exp(3.0 * (x - 0.7))) for x in L], rtol=1e-12)
    np.testing.assert_allclose(alpha_from_loss(L, "tanh", beta=1.5, center=0.7),
                               [0.5 * (math.tanh(-1.5 * (x - 0.7)) + 1) for x in L], rtol=1e-12)
    k = -math.log(0.1 / 0.9) / (1.2 - 0.2)
    L2 = np.array([0.3, 0.7, 1.1])
    np.testing.assert_allclose(alpha_from_loss(L2, **{"mapping": "exp-decay", **EXAMPLE_PARAMS["exp-decay"]}),
                               [0.9 * math.exp(-k * (x - 0.2)) for x in L2], rtol=1e-12)


def test_threshold_boundary_goes_to_alpha_low():
    got = alpha_from_loss(np.array([0.7 - 1e-12, 0.7, 0.7 + 1e-12]), "threshold", tau=0.7)
    np.testing.assert_array_equal(got, [0.9, 0.1, 0.1])


@pytest.mark.parametrize("mapping", ["neg-sigmoid", "tanh"])
def test_half_at_the_center(mapping):
    for beta in (0.0, 0.5, 4.0, 1e6):
        assert alpha_from_loss(np.array([1.3]), mapping, beta=beta, center=1.3)[0] == 0.5
    # beta 0: no confidence signal, 0.5 everywhere
    np.testing.assert_array_equal(alpha_from_loss(np.array([0.0, 9.0]), mapping, beta=0.0, center=1.0), [0.5, 0.5])


def test_tanh_with_beta_is_neg_sigmoid_with_twice_beta():
    L = np.linspace(-1, 4, 101)
    np.testing.assert_allclose(alpha_from_loss(L, "tanh", beta=1.7, center=0.8),
                               alpha_from_loss(L, "neg-sigmoid", beta=3.4, center=0.8), atol=1e-12)


def test_exp_decay_ends_and_clamping():
    p = EXAMPLE_PARAMS["exp-decay"]
    got = alpha_from_loss(np.array([-1e300, -5.0, 0.2, 1.2, 7.0, 1e300]), "exp-decay", **p)
    np.testing.assert_array_equal(got, [0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    # halfway in loss is the geometric mean of the ends
    assert alpha_from_loss(np.array([0.7]), "exp-decay", **p)[0] == pytest.approx(0.3, rel=1e-12)
    # alpha_min == alpha_max: constant
    same = dict(p, alpha_min=0.4, alpha_max=0.4)
    np.testing.assert_array_equal(alpha_from_loss(np.array([0.0, 0.7, 2.0]), "exp-decay", **same), [0.4] * 3)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_every_mapping_is_non_increasing_and_within_unit_interval(mapping):
    L = np.concatenate([[-1e6, -3.0], np.linspace(-1, 5, 2001), [50.0, 1e6]])
    for params in (EXAMPLE_PARAMS[mapping], calibrate_params(np.random.default_rng(0).exponential(0.5, 1000), mapping)):
        a = alpha_from_loss(L, mapping, **params)
        assert ((a >= 0) & (a <= 1)).all()
        assert (np.diff(a) <= 0).all()
        if mapping != "constant":
            assert a[0] > a[-1]  # actually decreasing somewhere


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_numpy_and_torch_agree_in_values_and_types(mapping):
    p = EXAMPLE_PARAMS[mapping]
    L64 = np.linspace(0, 2, 41)
    a_np = alpha_from_loss(L64, mapping, **p)
    assert type(a_np) is np.ndarray and a_np.dtype == np.float64 and a_np.shape == (41,)
    a_t = alpha_from_loss(torch.from_numpy(L64), mapping, **p)
    assert type(a_t) is torch.Tensor and a_t.dtype == torch.float64 and a_t.device == torch.device("cpu")
    np.testing.assert_array_equal(a_t.numpy(), a_np)

    a_t32 = alpha_from_loss(torch.from_numpy(L64).float(), mapping, **p)
    assert a_t32.dtype == torch.float32
    np.testing.assert_allclose(a_t32.numpy(), a_np, atol=1e-6)
    a_np32 = alpha_from_loss(L64.astype(np.float32), mapping, **p)
    assert a_np32.dtype == np.float32
    assert alpha_from_loss(torch.tensor([0, 1, 2]), mapping, **p).dtype == torch.float32  # integer losses
    assert alpha_from_loss([0.0, 1.0], mapping, **p).dtype == np.float64                   # a list
    assert alpha_from_loss(torch.zeros(2, 3), mapping, **p).shape == (2, 3)
    assert alpha_from_loss(np.zeros(0), mapping, **p).shape == (0,)
    # no gradient, input left alone
    L_grad = torch.tensor([0.1, 0.5], requires_grad=True)
    assert not alpha_from_loss(L_grad, mapping, **p).requires_grad


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_teacher_losses_are_refused(bad):
    for losses in (np.array([0.1, bad]), torch.tensor([0.1, bad])):
        with pytest.raises(ValueError, match="teacher_loss"):
            alpha_from_loss(losses, "constant", alpha=0.5)


@pytest.mark.parametrize(
    "mapping, params, name",
    [
        ("sigmoid", {"beta": 1.0, "center": 0.0}, "mapping"),
        ("constant", {}, "alpha"),
        ("constant", {"alpha": None}, "alpha"),
        ("constant", {"alpha": -0.1}, "alpha"),
        ("constant", {"alpha": 1.5}, "alpha"),
        ("constant", {"alpha": math.nan}, "alpha"),
        ("constant", {"alpha": "half"}, "alpha"),
        ("constant", {"alpha": True}, "alpha"),
        ("constant", {"alpha": 0.5, "tau": 1.0}, "tau"),
        ("threshold", {}, "tau"),
        ("threshold", {"tau": math.inf}, "tau"),
        ("threshold", {"tau": 0.5, "alpha_high": 1.1}, "alpha_high"),
        ("threshold", {"tau": 0.5, "alpha_low": -0.1}, "alpha_low"),
        ("threshold", {"tau": 0.5, "alpha_high": 0.2, "alpha_low": 0.8}, "alpha_high"),
        ("threshold", {"tau": 0.5, "alpha_hi": 0.9}, "alpha_hi"),
        ("neg-sigmoid", {"center": 0.5}, "beta"),
        ("neg-sigmoid", {"beta": 1.0}, "center"),
        ("neg-sigmoid", {"beta": -1.0, "center": 0.5}, "beta"),
        ("tanh", {"beta": -0.5, "center": 0.5}, "beta"),
        ("tanh", {"beta": 1.0, "center": 0.5, "k": 2}, "k"),
        ("exp-decay", {"alpha_max": 0.9, "loss_min": 0.0, "loss_max": 1.0}, "alpha_min"),
        ("exp-decay", {"alpha_min": 0.0, "alpha_max": 0.9, "loss_min": 0.0, "loss_max": 1.0}, "alpha_min"),
        ("exp-decay", {"alpha_min": -0.1, "alpha_max": 0.9, "loss_min": 0.0, "loss_max": 1.0}, "alpha_min"),
        ("exp-decay", {"alpha_min": 0.1, "alpha_max": 1.2, "loss_min": 0.0, "loss_max": 1.0}, "alpha_max"),
        ("exp-decay", {"alpha_min": 0.5, "alpha_max": 0.4, "loss_min": 0.0, "loss_max": 1.0}, "alpha_min"),
        ("exp-decay", {"alpha_min": 0.1, "alpha_max": 0.9, "loss_min": 1.0, "loss_max": 1.0}, "loss_max"),
        ("exp-decay", {"alpha_min": 0.1, "alpha_max": 0.9, "loss_min": 1.0, "loss_max": 0.5}, "loss_max"),
    ],
)
def test_invalid_parameters_raise_naming_the_parameter(mapping, params, name):
    for call in (lambda: alpha_from_loss(np.array([0.3]), mapping, **params),
                 lambda: validate_params(mapping, params)):
        with pytest.raises(ValueError, match=name) as info:
            call()
        assert isinstance(info.value, CpfdError)  # the CLI's handler prints it as one `error:` line


def test_exp_decay_message_reads_well():
    with pytest.raises(ValueError, match=r"^alpha_min must be positive for exp-decay, got 0$"):
        validate_params("exp-decay", {"alpha_min": 0, "alpha_max": 0.9, "loss_min": 0, "loss_max": 1})


# ----------------------------------------------------------------------------------------------
# Calibration


UNIFORM = np.linspace(0.0, 1.0, 100_001)  # quantile q is exactly q (linear interpolation)


def test_quantiles_of_uniform_losses():
    q = quantiles_of(UNIFORM)
    assert tuple(q) == QUANTILES
    for k, v in q.items():
        assert v == pytest.approx(k, abs=1e-12)


def test_calibrate_rule_on_uniform_losses():
    approx = lambda d: pytest.approx(d, abs=1e-9)  # noqa: E731
    assert calibrate_params(UNIFORM, "constant") == {"alpha": 0.5}
    assert calibrate_params(UNIFORM, "threshold") == approx({"tau": 0.5, "alpha_high": 0.9, "alpha_low": 0.1})
    assert calibrate_params(UNIFORM, "neg-sigmoid") == approx({"beta": 5.0, "center": 0.5})  # 4 / 0.8
    assert calibrate_params(UNIFORM, "tanh") == approx({"beta": 5.0, "center": 0.5})         # 4 / 0.8
    assert calibrate_params(UNIFORM, "exp-decay") == approx(
        {"alpha_min": 0.1, "alpha_max": 0.9, "loss_min": 0.05, "loss_max": 0.95})


@pytest.mark.parametrize("mapping, half_span", [("neg-sigmoid", 2), ("tanh", 4)])
def test_calibrated_curves_over_the_central_80_percent(mapping, half_span):
    # neg-sigmoid: 0.881 -> 0.119; tanh, the same beta on a curve twice as steep: 0.982 -> 0.018
    p = calibrate_params(UNIFORM, mapping)
    a10, a50, a90 = alpha_from_loss(np.array([0.1, 0.5, 0.9]), mapping, **p)
    assert a10 == pytest.approx(1 / (1 + math.exp(-half_span)), abs=1e-9)
    assert a50 == pytest.approx(0.5)
    assert a90 == pytest.approx(1 / (1 + math.exp(half_span)), abs=1e-9)
    # half the samples above tau, half below, for the threshold rule
    a = alpha_from_loss(UNIFORM, "threshold", **calibrate_params(UNIFORM, "threshold"))
    assert abs((a == 0.9).mean() - 0.5) < 1e-3


def test_calibrated_log_odds_fall_by_four_on_a_skewed_distribution():
    losses = np.random.default_rng(1).exponential(0.3, 5000)
    q = quantiles_of(losses)
    for mapping, drop in (("neg-sigmoid", 4.0), ("tanh", 8.0)):
        a10, a90 = alpha_from_loss(np.array([q[0.1], q[0.9]]), mapping, **calibrate_params(losses, mapping))
        logit = lambda a: math.log(a / (1 - a))  # noqa: E731
        assert logit(a10) - logit(a90) == pytest.approx(drop)
    ed = alpha_from_loss(np.array([q[0.05], q[0.95]]), "exp-decay", **calibrate_params(losses, "exp-decay"))
    np.testing.assert_allclose(ed, [0.9, 0.1])


def test_calibrate_accepts_a_quantile_dict_and_degenerate_losses():
    q = quantiles_of(np.random.default_rng(2).gamma(2.0, 0.2, 999))
    for mapping in MAPPINGS:
        assert calibrate_params(q, mapping) == calibrate_params(np.random.default_rng(2).gamma(2.0, 0.2, 999), mapping)
    # keys as DuckDB might give them, e.g. strings
    assert calibrate_params({str(k): v for k, v in q.items()}, "tanh") == calibrate_params(q, "tanh")
    # all losses equal: beta and loss_max stay finite and valid
    same = np.full(10, 0.3)
    for mapping in MAPPINGS:
        p = calibrate_params(same, mapping)
        assert validate_params(mapping, p) == p and all(math.isfinite(v) for v in p.values())
    assert calibrate_params(same, "exp-decay")["loss_max"] > calibrate_params(same, "exp-decay")["loss_min"]


def test_calibrate_refusals():
    with pytest.raises(ValueError, match="losses"):
        calibrate_params(np.array([]), "tanh")
    with pytest.raises(ValueError, match="losses"):
        calibrate_params(np.array([0.1, math.nan]), "tanh")
    with pytest.raises(ValueError, match="0.95"):
        calibrate_params({0.05: 0.1, 0.1: 0.2, 0.5: 0.3, 0.9: 0.4}, "exp-decay")
    with pytest.raises(ValueError, match="quantiles"):
        calibrate_params({0.05: 0.5, 0.1: 0.2, 0.5: 0.3, 0.9: 0.4, 0.95: 0.6}, "tanh")
    with pytest.raises(ValueError, match="mapping"):
        calibrate_params(UNIFORM, "linear")


def test_resolve_fills_only_what_is_not_given():
    q = quantiles_of(UNIFORM)
    assert resolve_params("neg-sigmoid", {"beta": 2.0, "center": None}, q) == pytest.approx({"beta": 2.0, "center": 0.5})
    assert resolve_params("neg-sigmoid", {}, UNIFORM) == pytest.approx({"beta": 5.0, "center": 0.5})
    assert resolve_params("exp-decay", {"alpha_min": 0.05}, q) == pytest.approx(
        {"alpha_min": 0.05, "alpha_max": 0.9, "loss_min": 0.05, "loss_max": 0.95})
    # nothing to calibrate: no losses needed
    assert resolve_params("tanh", {"beta": 1, "center": 2}) == {"beta": 1.0, "center": 2.0}
    assert resolve_params("threshold", {"tau": 0.3}) == {"tau": 0.3, "alpha_high": 0.9, "alpha_low": 0.1}
    assert resolve_params("constant", {}) == {"alpha": 0.5}
    with pytest.raises(ValueError, match="center"):
        resolve_params("tanh", {"beta": 1.0})
    with pytest.raises(ValueError, match="bta"):
        resolve_params("tanh", {"bta": 1.0}, q)
    # a given value that clashes with a calibrated one is reported by name
    with pytest.raises(ValueError, match="loss_max"):
        resolve_params("exp-decay", {"loss_max": 0.01}, q)
    with pytest.raises(ValueError, match="alpha_min"):
        resolve_params("exp-decay", {"alpha_min": 0.95}, q)


def test_student_never_imports_teacher():
    tree = ast.parse(Path(cpfd.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "teacher"]


# ----------------------------------------------------------------------------------------------
# Properties (hypothesis): bounded example counts, no deadline; database=None: every run draws
# fresh examples.

MANY_EXAMPLES = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

FINITE = st.floats(allow_nan=False, allow_infinity=False)
UNIT = st.floats(0.0, 1.0)


@st.composite
def mapping_and_params(draw):
    mapping = draw(st.sampled_from(MAPPINGS))
    if mapping == "constant":
        params = {"alpha": draw(UNIT)}
    elif mapping == "threshold":
        high = draw(UNIT)
        params = {"tau": draw(FINITE), "alpha_high": high, "alpha_low": draw(st.floats(0.0, high))}
    elif mapping in ("neg-sigmoid", "tanh"):
        params = {"beta": draw(st.floats(0.0, 1.7976931348623157e308)), "center": draw(FINITE)}
    else:
        alpha_max = draw(st.floats(0.0, 1.0, exclude_min=True))
        lo, hi = sorted(draw(st.lists(FINITE, min_size=2, max_size=2, unique=True)))
        params = {"alpha_min": draw(st.floats(0.0, alpha_max, exclude_min=True)), "alpha_max": alpha_max,
                  "loss_min": lo, "loss_max": hi}
    validate_params(mapping, params)  # the strategy follows its rules
    return mapping, params


@st.composite
def finite_losses(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    array = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6),
                            elements=st.floats(allow_nan=False, allow_infinity=False, width=np.finfo(dtype).bits)))
    as_tensor = draw(st.booleans())
    return torch.from_numpy(array) if as_tensor else array


@MANY_EXAMPLES
@given(mp=mapping_and_params(), losses=finite_losses())
def test_alpha_is_finite_in_unit_range_and_non_increasing(mp, losses):
    mapping, params = mp
    alpha = alpha_from_loss(losses, mapping, **params)
    a = np.asarray(alpha.float() if isinstance(alpha, torch.Tensor) else alpha, dtype=np.float64)
    assert a.shape == tuple(losses.shape)
    assert np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all(), (a, losses)
    ordered = np.sort(np.asarray(losses).reshape(-1))
    a_sorted = np.asarray(alpha_from_loss(ordered, mapping, **params))
    assert (np.diff(a_sorted) <= 0).all(), (ordered, a_sorted)


@st.composite
def loss_inputs(draw):
    b, c = draw(st.integers(0, 4)), draw(st.integers(2, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    logits = hnp.arrays(dtype, (b, c), elements=st.floats(-1e4, 1e4, width=np.finfo(dtype).bits))
    s, t = torch.from_numpy(draw(logits)), torch.from_numpy(draw(logits))
    labels = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)), dtype=torch.int64)
    per_sample = hnp.arrays(np.float32, (b,), elements=st.floats(0, 1, width=32)).map(torch.from_numpy)
    alpha = draw(st.one_of(UNIT, per_sample))
    return s, t, labels, alpha, draw(st.floats(0.05, 20.0))


@MANY_EXAMPLES
@given(inputs=loss_inputs())
def test_cpfd_loss_is_finite_non_negative_with_finite_gradients(inputs):
    s, t, labels, alpha, temperature = inputs
    s = s.clone().requires_grad_(True)
    loss = cpfd_loss(s, t, labels, alpha, temperature)
    assert torch.isfinite(loss)
    # KL and CE are >= 0; float rounding of terms as large as |logit| / T may dip a hair below
    scale = 1.0 + (s.detach().abs().max().item() + t.abs().max().item() if s.numel() else 0.0) * temperature
    eps = 1e-5 if s.dtype == torch.float32 else 1e-12
    assert loss.item() >= -eps * scale, (loss.item(), scale)
    loss.backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------------------------
# The confidence signal a mapping reads (distill --confidence)

def test_entropy_and_margin_are_label_free_and_span_0_to_1():
    from cpfd.student.cpfd import confidence_signal

    logits = np.array([[0.0, 0.0], [10.0, -10.0], [-10.0, 10.0], [1.0, 0.0]], dtype=np.float32)
    entropy = confidence_signal("entropy", None, logits)
    margin = confidence_signal("margin", None, logits)
    assert entropy.dtype == np.float32 and entropy[0] == pytest.approx(1.0) and entropy[1] == pytest.approx(0.0, abs=1e-6)
    assert margin[0] == pytest.approx(1.0) and margin[2] == pytest.approx(0.0, abs=1e-6)
    p = 1 / (1 + np.exp(-1.0))
    assert margin[3] == pytest.approx(1 - (p - (1 - p)), rel=1e-5)
    assert entropy[3] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2), rel=1e-5)
    three = np.array([[2.0, 1.0, 0.0]])
    assert 0 < confidence_signal("entropy", None, three)[0] < 1
    as_tensor = confidence_signal("entropy", None, torch.tensor(logits))
    assert isinstance(as_tensor, torch.Tensor) and np.allclose(as_tensor.numpy(), entropy, atol=1e-6)
    losses = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    assert confidence_signal("loss", losses, logits) is losses
    with pytest.raises(CpfdError, match="--confidence must be one of loss, entropy, margin"):
        confidence_signal("brier", losses, logits)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-30, 30), min_size=3, max_size=3), min_size=1, max_size=20))
def test_signals_stay_in_0_1_and_a_confident_row_is_below_an_unsure_one(rows):
    from cpfd.student.cpfd import confidence_signal

    logits = np.array(rows, dtype=np.float32)
    for name in ("entropy", "margin"):
        signal = confidence_signal(name, None, logits)
        assert ((signal >= 0) & (signal <= 1)).all()
    sure, unsure = np.array([[9.0, 0.0, 0.0]]), np.array([[1.0, 0.9, 0.8]])
    for name in ("entropy", "margin"):
        assert confidence_signal(name, None, sure)[0] < confidence_signal(name, None, unsure)[0]
