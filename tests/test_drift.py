"""Drift: the conformal martingale's level and power, the monitor's kinds on synthetic scenes, the reference's
checks (another model's refused, none: a notice), and ``edgecls run`` carrying ``drift`` end to end."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import run_cli_captured as cli
from runtime_helpers import export_tiny_onnx, read_jsonl, write_images

from edgecls.runtime.drift.image_checks import STATS, thumbnail_stats
from edgecls.runtime.drift.martingale import ConformalMartingale
from edgecls.runtime.drift.monitor import DriftConfig, SourceMonitor, Thresholds
from edgecls.runtime.drift.reference import (
    DriftReference,
    DriftReferenceError,
    load_reference,
    reference_path,
)


# -- the martingale ------------------------------------------------------------------------------------------------
def test_martingale_keeps_its_level_on_exchangeable_values_and_fires_on_a_shift():
    alpha, runs, fired = 0.05, 40, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        m = ConformalMartingale(rng.normal(size=100), alpha, seed=seed)
        fired += any(m.update(x) >= m.threshold for x in rng.normal(size=500))
    # P(ever >= 1/alpha) <= alpha by Ville: 40 runs at 0.05 → 2 expected at most; 7 or more has probability < 0.5 %
    assert fired <= 6, fired
    rng = np.random.default_rng(1)
    m = ConformalMartingale(rng.normal(size=100), alpha, seed=1)
    for x in rng.normal(size=300):  # a long quiet stretch first: the jumper must still rise quickly
        m.update(x)
    steps = next(i for i, x in enumerate(rng.normal(3.0, 1.0, size=100)) if m.update(x) >= m.threshold)
    assert steps < 10, steps


def test_martingale_p_values_are_uniform_and_bad_values_refused():
    rng = np.random.default_rng(0)
    m = ConformalMartingale(rng.normal(size=200), 0.05, seed=0)
    ps = []
    for x in rng.normal(size=2000):
        m.update(x)
        ps.append(m.last_p)
    assert abs(np.mean(ps) - 0.5) < 0.03 and abs(np.mean(np.asarray(ps) < 0.1) - 0.1) < 0.03
    with pytest.raises(ValueError, match="non-finite"):
        m.update(float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        ConformalMartingale([1.0], 1.5)


# -- the monitor on synthetic scenes ---------------------------------------------------------------------------------
def _scene(rng, size=56):
    """A grey 'photo': bright background, a textured darker object (like a product shot)."""
    g = np.full((size, size), rng.uniform(170, 240), np.float32)
    y0, x0 = rng.integers(5, 20, size=2)
    h, w = rng.integers(15, 30, size=2)
    g[y0:y0 + h, x0:x0 + w] = rng.uniform(30, 140) + 25 * rng.standard_normal((h, w)).astype(np.float32)
    return g


def _noisy(g, rng):
    return (g + rng.normal(0, 1.0, g.shape)).astype(np.float32)


def _reference(n=150, seed=100):
    rng = np.random.default_rng(seed)
    stats = np.stack([thumbnail_stats(_noisy(_scene(rng), rng)) for _ in range(n)])
    return DriftReference(model_sha256="0" * 64, source="synthetic", ood_kind="energy",
                          stats={s: tuple(stats[:, i]) for i, s in enumerate(STATS)},
                          scores={"ood_score": tuple(rng.normal(-5, 1, n)), "max_prob": tuple(np.full(n, 0.9))})


def _stream(monitor, rng, scenes, hold=40, shift=None, score=lambda r: r.normal(-5, 1)):
    """Feed ``scenes`` held scenes; returns the kinds seen firing (set) and the first frame any fired."""
    seen, first = set(), None
    for _ in range(scenes):
        g = _scene(rng)
        if shift is not None:
            g = shift(g)
        pred = SimpleNamespace(ood_score=score(rng), confidence=0.9)
        for _ in range(hold):
            kinds = monitor.observe(_noisy(g, rng) if shift is None or shift.__name__ != "frozen" else g, pred)
            if kinds and first is None:
                first = monitor.frames
            seen.update(kinds)
    return seen, first


def _monitor(seed=0, **kw):
    cfg = DriftConfig(**kw)
    return SourceMonitor(Thresholds.from_reference(_reference(), cfg), cfg, seed=seed)


def test_monitor_is_quiet_on_calibration_like_scenes():
    seen, _ = _stream(_monitor(), np.random.default_rng(0), scenes=150)
    assert seen == set(), seen


@pytest.mark.parametrize("kind,shift", [
    ("dark", lambda g: g * 0.4),
    ("blur", lambda g: __import__("cv2").GaussianBlur(g, (0, 0), 2.0)),
    ("covered", lambda g: np.full_like(g, 3.0)),
])
def test_monitor_names_the_image_check_that_fires(kind, shift):
    pytest.importorskip("cv2")
    m = _monitor()
    rng = np.random.default_rng(1)
    _stream(m, rng, scenes=20)
    frames0 = m.frames
    seen, first = _stream(m, rng, scenes=6, shift=shift)
    assert kind in seen and first is not None and first - frames0 <= 4 * 40, (seen, first, frames0)
    assert seen <= {kind, "scores"}, seen


def test_monitor_frozen_and_scores():
    m = _monitor(frozen_frames=30)
    rng = np.random.default_rng(2)
    _stream(m, rng, scenes=10)

    def frozen(g):
        return _noisy(g, rng)
    seen, _ = _stream(m, rng, scenes=1, hold=40, shift=frozen)
    assert "frozen" in seen
    m = _monitor()
    _stream(m, rng, scenes=10)
    seen, _ = _stream(m, rng, scenes=15, score=lambda r: r.normal(-1, 1))  # unknown-looking scores
    assert seen == {"scores"}, seen


# -- the reference -------------------------------------------------------------------------------------------------
def test_reference_roundtrip_mismatch_and_absence(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model bytes")
    assert load_reference(model) is None  # none: the run goes on without drift signals
    ref = _reference()
    bad = DriftReference(**{**ref.__dict__, "model_sha256": "f" * 64})
    bad.save(model)
    with pytest.raises(DriftReferenceError, match="made for the model with sha256 ffffffffffff"):
        load_reference(model)
    from edgecls.core.fileio import file_sha256

    good = DriftReference(**{**ref.__dict__, "model_sha256": file_sha256(model)})
    good.save(model)
    back = load_reference(model)
    assert back.n == ref.n and np.allclose(back.stat("white"), ref.stat("white"), atol=1e-5)
    reference_path(model).write_text("{\"format\": 1, \"model_sha256\": \"x\"}")
    with pytest.raises(DriftReferenceError, match="malformed"):
        load_reference(model)
    with pytest.raises(DriftReferenceError, match="at least 30"):
        DriftReference(model_sha256="x", source="", stats={s: (1.0,) * 5 for s in STATS})


# -- edgecls run end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("drift")
    export_tiny_onnx(d / "model.onnx")
    calib = d / "calib"
    write_images(calib, n=40, seed=3)
    photos = write_images(d / "photos", n=6, seed=4)
    return {"dir": d, "model": str(d / "model.onnx"), "calib": str(calib), "photos": photos}


def test_run_without_a_reference_says_so_once_and_has_no_drift(env, capsys):
    code, out, err = cli(["run", env["model"], str(env["photos"][0].parent), "--threads", "1"], capsys)
    assert code == 0, err
    assert err.count("no drift reference") == 1
    assert all("drift" not in r for r in read_jsonl(out))


def test_run_with_a_reference_carries_drift_and_refuses_another_models(env, capsys, tmp_path):
    cv2 = pytest.importorskip("cv2")
    code, out, err = cli(["drift-reference", env["model"], "--images", env["calib"], "--threads", "1"], capsys)
    assert code == 0, err
    assert reference_path(env["model"]).is_file() and "scores on 40 images" in out
    video = tmp_path / "frozen.avi"  # one picture written 80 times: decoded bit-identical, a frozen camera
    img = cv2.imread(str(env["photos"][0]))
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (img.shape[1], img.shape[0]))
    for _ in range(80):
        vw.write(img)
    vw.release()
    summary = tmp_path / "summary.json"
    code, out, err = cli(["run", env["model"], str(video), "--threads", "1", "--summary-json", str(summary)], capsys)
    assert code == 0, err
    recs = read_jsonl(out)
    assert recs[0]["drift"] is False and recs[-1]["drift"] == ["frozen"], (recs[0], recs[-1])
    assert "frozen from frame 59" in err, err
    alarms = json.loads(summary.read_text())["drift"]["alarms"]
    assert [(a["kind"], a["frame"]) for a in alarms] == [("frozen", 59)]
    code, out, err = cli(["run", env["model"], str(video), "--no-drift", "--threads", "1"], capsys)
    assert code == 0 and all("drift" not in r for r in read_jsonl(out))
    other = tmp_path / "other.onnx"
    export_tiny_onnx(other, seed=7)
    code, out, err = cli(["run", str(other), str(video), "--drift-reference", str(reference_path(env["model"]))],
                         capsys)
    assert code == 2 and "was made for the model with sha256" in err, err


def test_metrics_expose_alarms_martingale_and_histograms(env):
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from edgecls.runtime.drift.watch import DriftWatch
    from edgecls.runtime.run.prometheus import RunCollector
    from edgecls.runtime.run.stats import RunStats
    from edgecls.runtime.spec import PreprocessSpec

    ref = _reference()
    p = PreprocessSpec()
    watch = DriftWatch(ref, p.mean, p.std, DriftConfig(frozen_frames=5), on_alarm=lambda *a: calls.append(a))
    calls = []
    chw = np.random.default_rng(0).normal(size=(3, 224, 224)).astype(np.float32)
    pred = SimpleNamespace(ood_score=-5.0, confidence=0.97, decision="no", label="other")
    out = [watch.observe("cam0", chw, pred, i) for i in range(8)]
    assert out[0] is False and out[-1] == ["frozen"] and calls == [("cam0", ("frozen",), True)]
    decider = SimpleNamespace(spec=SimpleNamespace(positive="mobile"), threshold=0.5,
                              decision_names=lambda: ("yes", "no", "uncertain"))
    stats = RunStats(decider, "cpu", 1, 0.1)
    stats.add(pred)
    stats.drift = watch
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RunCollector(stats, []))
    text = generate_latest(reg).decode()
    assert 'edgecls_run_drift_alarms_total{kind="frozen",source="cam0"} 1.0' in text
    assert 'edgecls_run_drift_firing{kind="frozen",source="cam0"} 1.0' in text
    assert "edgecls_run_drift_martingale{source=\"cam0\"}" in text and "edgecls_run_drift_threshold 50.0" in text
    assert 'edgecls_run_confidence_bucket{le="0.99"} 1.0' in text and 'edgecls_run_ood_score_bucket{le="+Inf"} 1.0' in text
