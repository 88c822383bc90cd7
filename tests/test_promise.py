"""Issue 19: the best promise the data allows, cross-fitted scores, re-calibration from a labelled folder, and the
log lines (known answers: synthetic scores and features whose true precision is known)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecls.runtime.confidence import ConfidenceSettings, certify_threshold, fit_confidence
from edgecls.runtime.confidence.guarantee import LADDER, best_promise, with_best
from edgecls.runtime.spec import ModelSpec

torch = pytest.importorskip("torch")


def _true_precision(t, pi=0.3):
    """Positives' scores ~ Beta(5, 1) (CDF t^5), negatives' ~ Beta(1, 3) (CDF 1 - (1-t)^3)."""
    tp, fp = pi * (1 - t**5), (1 - pi) * (1 - t) ** 3
    return tp / (tp + fp) if tp + fp > 0 else 1.0


def _draw(rng, n, pi=0.3):
    y = rng.random(n) < pi
    return np.where(y, rng.beta(5, 1, n), rng.beta(1, 3, n)), y


def test_best_promise_is_the_highest_ladder_target_and_fails_no_more_than_delta():
    rng = np.random.default_rng(3)
    delta, trials, fails, made = 0.2, 150, 0, 0
    for _ in range(trials):
        s, y = _draw(rng, 150)
        b = best_promise(s, y, delta, below=0.99)
        if b is not None:
            made += 1
            assert b.certified and b.ladder == len([t for t in LADDER if t < 0.99]) and b.delta == delta
            fails += _true_precision(b.threshold) < b.target
    assert made > trials // 2
    assert fails / trials <= delta  # choosing the highest certified target costs no confidence (δ/m each)


def test_refusal_states_the_best_promise_and_what_the_requested_one_lacks():
    rng = np.random.default_rng(4)
    s, y = _draw(rng, 300)
    g = with_best(certify_threshold(s, y, 0.99, 0.1, "mobile"), s, y)
    assert not g.certified and g.best_target is not None and g.best_target < 0.99
    b = best_promise(s, y, 0.1, "mobile", below=0.99)
    assert (g.best_target, g.best_threshold, g.best_recall) == (b.target, b.threshold, b.recall)
    st = g.statement()
    assert st.startswith("NOT GUARANTEED") and "BEST PROMISE" in st and f">= {g.best_target:g}" in st
    assert "--best-promise" in st and "more (at least" in st  # how many more labelled positives 0.99 needs
    # --best-promise deploys it; the settings it was fitted with survive a round trip (re-fit keeps them)
    z = np.log(np.c_[s, 1 - s].clip(1e-9))
    conf = fit_confidence(z, np.where(y, 0, 1), ("mobile", "other"), temperature=1.0, positive="mobile",
                          settings=ConfidenceSettings(target_precision=0.99, delta=0.1, best=True))
    assert conf.guarantee.certified and conf.guarantee.ladder > 0 and conf.guarantee.target < 0.99
    back = conf.settings()
    assert back.best and back.target_precision == 0.99


def _gaussian(rng, n, d=5, pi=0.2, shift=3.0):
    y = (rng.random(n) >= pi).astype(np.int64)  # 0 = positive, as 'mobile' is class 0
    x = rng.normal(0, 1, (n, d)).astype(np.float32)
    x[:, 0] += np.where(y == 0, shift, 0.0)
    return x, y


@pytest.mark.slow
def test_cross_fitted_promise_holds_for_the_deployed_head_on_known_data():
    """Features with a known distribution: the true precision of the head fitted on the whole pool, at the threshold
    certified on out-of-fold scores, is measured on 40,000 fresh draws; it is below the target at most δ of the
    time."""
    from edgecls.runtime import metrics as M
    from edgecls.train.crossfit import out_of_fold_logits
    from edgecls.train.linear_head import fit_linear_head

    rng = np.random.default_rng(5)
    x_big, y_big = _gaussian(rng, 40000)
    target, delta, trials, fails, made = 0.9, 0.2, 30, 0, 0
    for i in range(trials):
        x, y = _gaussian(rng, 500)
        oof = out_of_fold_logits(x, y, 2, 0.01, 5, i, True, 100)
        g = certify_threshold(M.softmax(oof)[:, 0], y == 0, target, delta)
        if g.certified:
            made += 1
            W, b = fit_linear_head(x, y, 2, None, 0.01, 100)
            p = M.softmax(x_big @ W.T + b)[:, 0]
            acc = p >= g.threshold
            fails += float(np.mean(y_big[acc] == 0)) < target
    assert made >= trials // 2
    assert fails / trials <= delta


def test_cross_fitted_scores_are_honest_where_in_sample_scores_are_not():
    """Features that carry no information (true precision = the base rate 0.3 at every threshold): the head's
    in-sample scores would certify 0.8, the out-of-fold ones refuse."""
    from edgecls.runtime import metrics as M
    from edgecls.train.crossfit import crossfit_head
    from edgecls.train.linear_head import fit_linear_head

    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (240, 120)).astype(np.float32)
    y = (rng.random(240) >= 0.3).astype(np.int64)
    W, b = fit_linear_head(x, y, 2, None, 1e-4, 100)
    assert certify_threshold(M.softmax(x @ W.T + b)[:, 0], y == 0, 0.8, 0.1).certified  # overfitted: a false promise
    cf = crossfit_head(x[:200], y[:200], x[200:], y[200:], 2, 1e-4, 0, False, 100)
    assert cf.n == 240 and cf.n_train == 200 and cf.folds == 5 and "cross-fitted" in cf.source("0", ("0", "1"))
    assert not certify_threshold(M.softmax(cf.logits)[:, 0], cf.y == 0, 0.8, 0.1).certified


def test_recalibrate_spec_refits_temperature_and_keeps_settings():
    from edgecls.runtime.confidence.recalibrate import describe, recalibrate_spec

    rng = np.random.default_rng(7)
    y = (rng.random(400) >= 0.4).astype(np.int64)
    z = np.c_[np.where(y == 0, 3.0, -3.0) + rng.normal(0, 2, 400), np.zeros(400)] * 2.0  # over-confident
    spec = ModelSpec(arch="mobilenet_v2", classes=("mobile", "other"), positive="mobile")
    first = recalibrate_spec(spec, z, y, "a", ConfidenceSettings(target_precision=0.9, coverage=0.8))
    assert first.spec.temperature > 1.2 and first.spec.confidence.temperature == first.spec.temperature
    again = recalibrate_spec(first.spec, z[:200], y[:200], "b")
    s = again.spec.confidence.settings()
    assert (s.target_precision, s.coverage) == (0.9, 0.8)  # the artifact's own settings are kept
    assert again.before == first.statement and again.spec.threshold == again.spec.confidence.guarantee.threshold
    assert any("promise" in line for line in describe(again, "best.pt"))


def test_sidecar_disagreement_is_one_short_line(tmp_path, caplog):
    from edgecls.runtime.confidence import fit_confidence as fit
    from edgecls.runtime.model_io import _differences

    rng = np.random.default_rng(8)
    z, y = rng.normal(0, 2, (300, 2)), rng.integers(0, 2, 300)
    spec = ModelSpec(arch="a", classes=("mobile", "other"), positive="mobile")
    a = spec.replace(confidence=fit(z, y, spec.classes, temperature=1.0, positive="mobile"))
    b = spec.replace(confidence=fit(z[:200], y[:200], spec.classes, temperature=1.0, positive="mobile"))
    msg = _differences(a, b)
    assert "confidence.conformal.scores: [300 values] vs [200 values]" in msg and len(msg) < 1000


def test_training_states_the_promise_once(tiny_data, tmp_path, caplog):
    from edgecls.train.config import RECIPES, TrainConfig
    from edgecls.train.trainer import train

    rec = RECIPES["fast"].override(epochs=1, batch_size=8, image_size=32)
    cfg = TrainConfig(data=str(tiny_data), recipe=rec, arch="resnet18", weights="none", out=str(tmp_path / "r"),
                      positive="mobile", progress=False, workers=0, device="cpu")
    with caplog.at_level(logging.INFO):
        res = train(cfg)
    said = [r for r in caplog.records if "NOT GUARANTEED" in r.getMessage() or "with 90 % confidence" in
            r.getMessage()]
    assert len(said) == 1 and res.calibration.statement is not None
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)
