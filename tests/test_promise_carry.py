"""One promise from training to the camera (known answers, no model): an exported artifact whose outputs are
within the measured margin states the checkpoint's promise word for word; one that differs enough to matter is
re-certified on the checkpoint's scores moved against the promise, and says why; ``calibrate`` re-states the
promise with the stored scores plus the new images, each image once; the scores travel through the spec's JSON.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgecls.export.promise import carry_promise
from edgecls.runtime.confidence import ConfidenceSettings, fit_confidence
from edgecls.runtime.confidence.recalibrate import recalibrate_spec
from edgecls.runtime.spec import ModelSpec

CLASSES = ("mobile", "other")


def _scores(n: int = 1400, pos: int = 60, seed: int = 0):
    """Logits of a good two-class model: positives score high, a few negatives too."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(pos, int), np.ones(n - pos, int)]
    margin = np.where(y == 0, rng.normal(6.0, 2.0, n), rng.normal(-6.0, 2.0, n))
    z = np.stack([margin / 2, -margin / 2], axis=1)
    return z, y


def _checkpoint_spec(target: float = 0.8) -> ModelSpec:
    z, y = _scores()
    settings = ConfidenceSettings(target_precision=target, delta=0.1)
    conf = fit_confidence(z, y, CLASSES, temperature=1.0, positive="mobile", settings=settings,
                          source="cross-fitted test scores", ids=[f"/img/{i}.jpg" for i in range(len(y))])
    assert conf.guarantee.certified  # the known answer the artifact must keep
    return ModelSpec(arch="mobilenet_v2", classes=CLASSES, positive="mobile", temperature=1.0,
                     threshold=conf.guarantee.threshold, confidence=conf)


def _report(prob: float, logit: float, n: int = 270):
    return SimpleNamespace(max_abs_prob=prob, max_abs_logit=logit, n=n)


def test_an_artifact_within_the_margin_states_the_checkpoints_promise_word_for_word():
    ck = _checkpoint_spec()
    for prob, logit in ((0.0, 0.0), (2e-7, 1e-6), (1e-4, 5e-4)):  # FP32, FP16-like, a good INT8
        art = ck.replace(precision="fp16")
        c = carry_promise(art, ck, _report(prob, logit), "model_fp16.onnx")
        assert c is not None and c.kept, (prob, c.why)
        g, g0 = c.spec.confidence.guarantee, ck.confidence.guarantee
        assert g.statement() == g0.statement() and c.spec.threshold == ck.threshold
        assert f"{prob:.2g}" in c.why and "270 parity images" in c.why
        assert c.spec.confidence.scores.n == ck.confidence.scores.n
        assert np.all(c.spec.confidence.scores.margin == prob)  # calibrate keeps the margin with the scores


def test_an_artifact_that_differs_enough_is_recertified_against_the_promise_and_says_why():
    ck = _checkpoint_spec()
    g0 = ck.confidence.guarantee
    c = carry_promise(ck.replace(precision="int8"), ck, _report(0.3, 2.0), "model_int8_cpu.onnx")
    assert c is not None and not c.kept and "re-certified" in c.why and "0.3" in c.why
    g = c.spec.confidence.guarantee
    # the moved scores: every positive 0.3 lower, every negative 0.3 higher -> a higher threshold, less recall
    assert g.threshold > g0.threshold and g.recall <= g0.recall and c.spec.threshold == g.threshold
    z, y = ck.confidence.scores.outputs, ck.confidence.scores.labels
    p = np.exp(z[:, 0]) / np.exp(z).sum(1)
    worst = np.where(y == 0, p - 0.3, p + 0.3)  # an artifact as far off as allowed, against the promise
    ood = ck.confidence.ood
    e = -np.log(np.exp(z).sum(1))
    accepted = (worst >= g.threshold) & ~(np.where(y == 0, e + 2.0, e - 2.0) > c.spec.confidence.ood.threshold)
    assert ood is not None and accepted.sum() >= 45  # enough to certify, precision on them as promised
    if g.certified:
        assert np.mean(y[accepted] == 0) >= g.target
    assert c.spec.confidence.conformal.quantile() >= ck.confidence.conformal.quantile()  # sets can only grow


def test_a_refusal_is_kept_when_the_worst_case_refuses_in_the_same_words():
    z, y = _scores(n=136, pos=5, seed=2)  # the fine-tuned mobile model's calibration split: 5 phones
    conf = fit_confidence(z, y, CLASSES, temperature=1.0, positive="mobile",
                          settings=ConfidenceSettings(target_precision=0.95), source="split")
    assert not conf.guarantee.certified
    ck = ModelSpec(arch="mobilenet_v2", classes=CLASSES, positive="mobile", threshold=conf.guarantee.threshold,
                   confidence=conf)
    c = carry_promise(ck.replace(precision="fp16"), ck, _report(1e-5, 1e-4, 134), "model_fp16.onnx")
    assert c.kept and c.spec.confidence.guarantee.statement() == conf.guarantee.statement()
    assert c.spec.threshold == ck.threshold
    # 0.015 moves the point-estimate threshold (midway between scores): the refusal is re-stated, and says why
    c = carry_promise(ck.replace(precision="fp16"), ck, _report(0.015, 0.09, 134), "model_fp16.onnx")
    g = c.spec.confidence.guarantee
    assert not c.kept and not g.certified and g.threshold > conf.guarantee.threshold and "0.015" in c.why


def test_other_classes_or_no_scores_fall_back():
    ck = _checkpoint_spec()
    assert carry_promise(ck, ck.replace(confidence=None), _report(0, 0), "x") is None  # no scores kept
    other = ModelSpec(arch="mobilenet_v2", classes=("a", "b"))
    assert carry_promise(other, ck, _report(0, 0), "x") is None
    assert carry_promise(ck, ck, _report(float("nan"), 0.0), "x") is None


def test_scores_travel_in_the_spec_json():
    ck = _checkpoint_spec()
    back = ModelSpec.from_json(ck.to_json())
    assert back.confidence.scores == ck.confidence.scores
    assert back.confidence.guarantee.statement() == ck.confidence.guarantee.statement()


def test_calibrate_restates_the_promise_with_the_stored_scores_and_the_new_images_once():
    ck = _checkpoint_spec()
    z, y = _scores(n=200, pos=40, seed=5)
    ids = [f"/new/{i}.jpg" for i in range(200)]
    r = recalibrate_spec(ck, z, y, "labelled folder new", ids=ids)
    assert r.kept == 1400 and r.images == 1600 and r.positives == 100
    assert r.spec.confidence.n == 1600 and "+ 200 from labelled folder new" in r.spec.confidence.source
    # again with an overlapping folder: 50 of the old images relabelled -> replaced, not counted twice
    again = ids[:100] + [f"/img/{i}.jpg" for i in range(50)]
    r2 = recalibrate_spec(r.spec, z[:150], y[:150], "second folder", ids=again)
    assert r2.images == 1600 - 150 + 150
    # without the stored scores: the new images only (train --calib-data)
    r3 = recalibrate_spec(ck, z, y, "only", ids=ids, combine=False)
    assert r3.images == 200 and r3.kept == 0


def test_recalibrating_an_artifact_with_margins_keeps_its_temperature():
    ck = _checkpoint_spec()
    c = carry_promise(ck.replace(precision="int8"), ck, _report(1e-3, 1e-2), "model_int8.onnx")
    z, y = _scores(n=100, pos=20, seed=9)
    r = recalibrate_spec(c.spec, z * 3.0, y, "folder")  # overconfident outputs would move T; margins forbid it
    assert r.spec.temperature == c.spec.temperature
    assert r.spec.confidence.scores.margin[:1400].max() == pytest.approx(1e-3)
    assert r.spec.confidence.scores.margin[1400:].max() == 0.0


def test_the_promise_only_breaks_accuracy_ties():
    from edgecls.train.report import head_replaces

    # the mobile run: the head phase 0.9962 vs the fine-tuned 1.0 on 134 selection images, stronger promise
    assert head_replaces(0.9962, 1.0, (0.8, 0.57), (0.0, 0.0)) == (False, True)  # accuracy first: not deployed
    assert head_replaces(1.0, 1.0, (0.8, 0.57), (0.0, 0.0)) == (True, True)  # a tie: the promise decides
    assert head_replaces(1.0, 1.0, (0.0, 0.0), (0.8, 0.5)) == (True, False)
