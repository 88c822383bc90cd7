"""The confidence statistics on synthetic scores whose right answer is known (numpy only, fast).

Binomial tails and Clopper–Pearson bounds against closed forms and brute force; conformal coverage on a
perfectly calibrated model (labels drawn from its own probabilities); the precision guarantee refusing with few
positives (and saying how many it needs), certifying with many, and failing no more often than δ on a score model
whose true precision is known in closed form; the OOD threshold's false-unknown rate and AUROC; the spec round trip
and the runtime decision (sets, uncertain, unknown).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgecls.core.errors import InputError
from edgecls.runtime.confidence import (
    ConfidenceSettings,
    ConformalFit,
    OODFit,
    auroc,
    certify_threshold,
    conformal_quantile,
    cp_lower,
    cp_upper,
    fit_confidence,
    nonconformity,
    ood_scores,
    prediction_sets,
    trials_needed,
)
from edgecls.runtime.confidence.bounds import binomial_sf, p_value_at_least
from edgecls.runtime.confidence.conformal import coverage_and_size, min_calibration_size
from edgecls.runtime.confidence.curves import risk_coverage
from edgecls.runtime.decision import UNCERTAIN, UNKNOWN, Decider
from edgecls.runtime.spec import ModelSpec, SpecError

# ------------------------------------------------------------------------------------------------ bounds


def test_binomial_tail_matches_brute_force():
    for n, p in ((1, 0.3), (7, 0.5), (20, 0.95), (60, 0.01)):
        pmf = [math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]
        for k in range(n + 1):
            assert binomial_sf(k, n, p) == pytest.approx(sum(pmf[k:]), rel=1e-9, abs=1e-15)


def test_clopper_pearson_closed_forms_and_reference_values():
    for n in (1, 9, 45, 300):  # all successes: L = δ^(1/n); no success: U = 1 - δ^(1/n)
        assert cp_lower(n, n, 0.1) == pytest.approx(0.1 ** (1 / n), rel=1e-9)
        assert cp_upper(0, n, 0.1) == pytest.approx(1 - 0.1 ** (1 / n), rel=1e-9)
    # the two-sided 95 % Clopper-Pearson interval of 5/10 is [0.18709, 0.81291] (R binom.test)
    assert cp_lower(5, 10, 0.025) == pytest.approx(0.187086, abs=1e-6)
    assert cp_upper(5, 10, 0.025) == pytest.approx(0.812914, abs=1e-6)
    assert cp_lower(0, 10, 0.1) == 0.0 and cp_upper(10, 10, 0.1) == 1.0
    # rejecting "rate < target" at δ is the same as the lower bound reaching the target
    for k, n in ((40, 42), (44, 45), (45, 45), (80, 82)):
        assert (p_value_at_least(k, n, 0.95) <= 0.1) == (cp_lower(k, n, 0.1) >= 0.95)
    with pytest.raises(ValueError):
        cp_lower(3, 2, 0.1)


def test_trials_needed():
    assert trials_needed(1.0, 0.95, 0.1) == 45  # 9 phones cannot certify 95 %: it takes 45 without a miss
    assert cp_lower(44, 44, 0.1) < 0.95 <= cp_lower(45, 45, 0.1)
    n = trials_needed(0.99, 0.95, 0.1)
    assert n > 45 and cp_lower(int(0.99 * n), n, 0.1) >= 0.95
    assert trials_needed(0.95, 0.95, 0.1) is None and trials_needed(0.9, 0.95, 0.1) is None


# --------------------------------------------------------------------------------------------- conformal


def _calibrated_model(rng, n, c=6, sharp=2.0):
    """Probabilities from random logits and labels drawn from them: the model is calibrated by construction."""
    z = rng.normal(0, sharp, (n, c))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return p, y


def test_conformal_quantile_rank_and_small_n():
    s = np.arange(1, 10) / 10.0  # 9 scores
    assert conformal_quantile(s, 0.1) == pytest.approx(0.9)  # k = ceil(10 * 0.9) = 9
    assert conformal_quantile(s, 0.2) == pytest.approx(0.8)
    assert conformal_quantile(s[:8], 0.1) == math.inf  # 8 images cannot serve 90 %: every label
    assert min_calibration_size(0.1) == 9 and min_calibration_size(0.05) == 19
    p = np.array([[0.7, 0.2, 0.1]])
    assert prediction_sets(p, math.inf, "lac").all() and prediction_sets(p, math.inf, "aps").all()


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_conformal_coverage_on_a_known_distribution(method):
    rng = np.random.default_rng(0)
    covs, sizes = [], []
    for alpha in (0.05, 0.1):
        got = []
        for _ in range(60):
            p, y = _calibrated_model(rng, 1200)
            fit = ConformalFit.fit(p[:400], y[:400], method, 1 - alpha)
            c, size = coverage_and_size(fit.sets(p[400:]), y[400:])
            got.append(c)
            sizes.append(size)
        covs.append((alpha, float(np.mean(got))))
    for alpha, c in covs:
        assert c >= 1 - alpha - 0.01, (method, alpha, c)  # valid
        if method == "lac":  # continuous scores: at most 1 - α + 1/(n+1), plus sampling noise
            assert c <= 1 - alpha + 1 / 401 + 0.01, (alpha, c)
    assert 1.0 < np.mean(sizes) < 6.0


def test_lac_is_smallest_and_aps_never_empty():
    rng = np.random.default_rng(1)
    p, y = _calibrated_model(rng, 2000, sharp=3.0)
    lac = ConformalFit.fit(p[:1000], y[:1000], "lac", 0.9).sets(p[1000:])
    aps = ConformalFit.fit(p[:1000], y[:1000], "aps", 0.9).sets(p[1000:])
    assert lac.sum(1).mean() <= aps.sum(1).mean() and aps.sum(1).min() >= 1
    # APS score = mass ranked at or above the true label
    assert nonconformity(np.array([[0.5, 0.3, 0.2]]), [1], "aps")[0] == pytest.approx(0.8)
    assert nonconformity(np.array([[0.5, 0.3, 0.2]]), [1], "lac")[0] == pytest.approx(0.7)


def test_conformal_fit_round_trip_rounds_up():
    fit = ConformalFit.fit(np.array([[0.1234567891, 0.8765432109]]), [1], "lac", 0.9)
    assert fit.scores[0] >= 1 - 0.8765432109 and fit.scores[0] - (1 - 0.8765432109) < 1e-6
    assert ConformalFit.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError):
        ConformalFit("lac", (0.3, 0.1))
    with pytest.raises(ValueError):
        ConformalFit("raps", (0.1,))


# ------------------------------------------------------------------------------------------- guarantee


def test_guarantee_refuses_with_few_positives_and_says_how_many():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(9, bool), np.zeros(261, bool)]  # mobile's val: 9 phones
    s = np.where(y, rng.uniform(0.9, 1.0, y.size), rng.uniform(0.0, 0.3, y.size))  # perfectly separated
    g = certify_threshold(s, y, 0.95, 0.1, "mobile")
    assert not g.certified and g.positives == 9
    assert g.precision == 1.0 and g.recall == 1.0 and g.predictions_needed == 45 and g.positives_needed == 45
    assert g.precision_bound == pytest.approx(0.1 ** (1 / 9))  # the best any threshold can do with 9
    assert 0.3 < g.threshold < 0.9  # the visible fallback: the point estimate, with a margin
    st = g.statement()
    assert st.startswith("NOT GUARANTEED") and "45 labelled 'mobile'" in st and "point estimate" in st
    none = certify_threshold(s, np.zeros(y.size, bool), 0.95, 0.1, "mobile")
    assert not none.certified and none.positives == 0 and "default" in none.statement()


def test_guarantee_certifies_with_enough_positives():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    s = np.where(y, rng.uniform(0.6, 1.0, y.size), rng.uniform(0.0, 0.7, y.size))
    g = certify_threshold(s, y, 0.95, 0.1, "mobile")
    assert g.certified and g.precision_bound >= 0.95 and g.precision >= 0.95
    accepted = s >= g.threshold
    assert g.accepted == accepted.sum() and g.precision == pytest.approx(y[accepted].mean())
    assert "precision >= 0.95 for 'mobile' with 90 % confidence" in g.statement()
    assert certify_threshold(s, y, 1.0, 0.1).certified is False  # 100 % is never certifiable


def _true_precision(t, pi=0.3):
    """Positives' scores ~ Beta(5, 1) (CDF t^5), negatives' ~ Beta(1, 3) (CDF 1 - (1-t)^3)."""
    tp, fp = pi * (1 - t**5), (1 - pi) * (1 - t) ** 3
    return tp / (tp + fp) if tp + fp > 0 else 1.0


def test_guarantee_fails_no_more_often_than_delta():
    rng = np.random.default_rng(2)
    target, delta, trials, fails, made = 0.9, 0.2, 150, 0, 0
    for _ in range(trials):
        y = rng.random(400) < 0.3
        s = np.where(y, rng.beta(5, 1, 400), rng.beta(1, 3, 400))
        g = certify_threshold(s, y, target, delta)
        if g.certified:
            made += 1
            fails += _true_precision(g.threshold) < target
    assert made > trials // 2  # the promise is made most of the time here...
    assert fails / trials <= delta  # ...and broken at most δ of the time (the true precision is known)


def test_fit_settings_are_validated():
    with pytest.raises(InputError):
        ConfidenceSettings(coverage=1.0)
    with pytest.raises(InputError):
        ConfidenceSettings(method="raps")
    with pytest.raises(InputError):
        ConfidenceSettings(delta=0)


# ------------------------------------------------------------------------------------------------ OOD


def test_ood_scores_threshold_and_auroc():
    z = np.array([[2.0, 0.0], [0.0, 0.0]])
    assert ood_scores(z, "energy") == pytest.approx(-np.log(np.exp(z).sum(1)))
    assert ood_scores(z, "max_logit") == pytest.approx([-2.0, 0.0])
    assert ood_scores(np.array([[0.9, 0.1]]), "msp", output="probs") == pytest.approx([-0.9])
    with pytest.raises(ValueError):
        ood_scores(np.array([[0.9, 0.1]]), "energy", output="probs")
    rng = np.random.default_rng(0)
    flagged = []
    for _ in range(200):  # conformal: an in-catalog image is flagged at most 1 - accept of the time
        fit = OODFit.fit(rng.normal(0, 1, (99, 3)), "max_logit", accept=0.95)
        flagged.append(np.mean(fit.unknown(ood_scores(rng.normal(0, 1, (200, 3)), "max_logit"))))
    assert np.mean(flagged) <= 0.05 + 0.01
    a, b = rng.normal(0, 1, 300), rng.normal(1.5, 1, 200)
    brute = np.mean([[1.0 if o > i else 0.5 if o == i else 0.0 for i in a] for o in b])
    assert auroc(a, b) == pytest.approx(brute)
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([1, 1], [1, 1]) == 0.5


def test_risk_coverage_curve():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    rc = risk_coverage(p, [0, 1, 0, 1])
    assert rc["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert rc["risk"] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert rc["aurc"] == pytest.approx(0.25 * (0 + 0.5 + 1 / 3 + 0.5))


# ------------------------------------------------------------------------------ spec and runtime decision


def _fitted_spec(positive=None, classes=("a", "b", "c"), n=300, seed=0, signal=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (n, len(classes))) + signal * np.eye(len(classes))[rng.integers(0, len(classes), n)]
    y = z.argmax(1)
    conf = fit_confidence(z, y, classes, temperature=1.0, positive=positive, source="synthetic")
    t = conf.guarantee.threshold if conf.guarantee else 0.5
    return ModelSpec(arch="x", classes=classes, positive=positive, threshold=t, confidence=conf)


def test_spec_round_trip_and_backwards_compatible():
    spec = _fitted_spec(positive="a")
    back = ModelSpec.from_json(spec.to_json())
    assert back == spec and back.confidence.conformal.n == 300 and back.confidence.guarantee.positive == "a"
    plain = ModelSpec(arch="x", classes=("a", "b"))
    assert "confidence" not in plain.to_dict() and ModelSpec.from_json(plain.to_json()) == plain
    d = spec.to_dict()
    d["confidence"]["conformal"]["method"] = "raps"
    with pytest.raises(SpecError, match="confidence"):
        ModelSpec.from_dict(d)
    with pytest.raises(SpecError, match="guarantee"):
        spec.replace(positive="b")


def test_decider_sets_uncertain_and_unknown():
    spec = _fitted_spec(signal=1.0)  # a weak model: 90 % coverage needs a quantile above 0.5
    d = Decider(spec)
    sure, torn = np.array([[9.0, 0.0, 0.0]]), np.array([[1.0, 1.0, -3.0]])
    p = d.decide(sure)[0]
    assert p.set == ("a",) and p.decision == "a" and p.unknown is False
    q = d.decide(torn)[0]
    assert set(q.set) == {"a", "b"} and q.decision == UNCERTAIN and q.to_dict()["set"] == list(q.set)
    far = np.array([[-30.0, -30.0, -30.0]])  # energy far above anything seen in the catalog
    r = d.decide(far)[0]
    assert r.unknown is True and r.decision == UNKNOWN and r.to_dict()["unknown"] is True
    assert UNKNOWN in d.decision_names()
    wide = Decider(spec, coverage=0.99).decide(torn)[0]
    assert len(wide.set) >= len(q.set)
    assert d.confidence.describe(d.threshold)[0].startswith("sets: 90 % coverage (LAC")


def test_decider_errors_name_the_fix():
    plain = ModelSpec(arch="x", classes=("a", "b"))
    assert Decider(plain).decide(np.array([[1.0, 0.0]]))[0].set is None  # old artifacts: no sets, as before
    with pytest.raises(InputError, match="--coverage needs a model that carries"):
        Decider(plain, coverage=0.9)
    spec = _fitted_spec()
    with pytest.raises(InputError, match="--coverage must be in"):
        Decider(spec, coverage=1.5)
    with pytest.raises(SpecError, match="re-fit"):
        Decider(spec.replace(temperature=2.0))


def test_positive_decision_keeps_the_guaranteed_threshold():
    spec = _fitted_spec(positive="a", n=2000)
    g = spec.confidence.guarantee
    assert g.certified and spec.threshold == g.threshold
    d = Decider(spec)
    assert d.confidence.guaranteed and "precision >= 0.95" in d.confidence.describe(d.threshold)[-1]
    by_hand = Decider(spec, threshold=0.5)
    assert not by_hand.confidence.guaranteed and "no guarantee at 0.5" in by_hand.confidence.describe(0.5)[-1]


def test_guarantee_is_for_the_runtime_yes_which_excludes_unknown_images():
    rng = np.random.default_rng(3)
    n_pos, n_neg, n_odd = 300, 600, 40  # odd: negatives far from the catalog (huge energy) with a high P(mobile)
    pos = np.c_[rng.normal(4, 1, n_pos), np.zeros(n_pos)]
    neg = np.c_[rng.normal(-4, 1, n_neg), np.zeros(n_neg)]
    odd = np.c_[np.full(n_odd, -18.0), np.full(n_odd, -20.0)]
    z, y = np.r_[pos, neg, odd], np.r_[np.zeros(n_pos), np.ones(n_neg + n_odd)].astype(int)
    conf = fit_confidence(z, y, ("mobile", "other"), temperature=1.0, positive="mobile")
    unknown = conf.ood.unknown(ood_scores(z, conf.ood.kind))
    assert unknown[-n_odd:].all()  # the odd images are beyond the OOD threshold...
    g = conf.guarantee
    p = np.exp(z[:, 0]) / np.exp(z).sum(1)
    yes = (p >= g.threshold) & ~unknown
    assert g.certified and g.precision == pytest.approx(np.mean(y[yes] == 0))  # ...and never a "yes"
    raw = certify_threshold(p, y == 0, 0.95, 0.1, "mobile")  # p alone would count them as accepted
    assert raw.threshold > g.threshold or not raw.certified


def test_point_threshold_stays_in_range_when_unknown_images_carry_negative_scores():
    """Images flagged unknown carry -1 (never accepted). When only 'accept everything' meets the target, the
    fallback threshold is 0 (every image the runtime can accept), never a negative number a spec would refuse."""
    from edgecls.runtime.confidence.guarantee import certify_threshold

    scores = np.array([-1.0, 0.2, 0.4, 0.6, 0.9])
    y = np.array([True, True, True, True, True])
    g = certify_threshold(scores, y, 0.95, 0.1)
    assert not g.certified and g.threshold == 0.0 and g.precision == 1.0 and g.recall == pytest.approx(0.8)
