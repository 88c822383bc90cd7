"""bench/train_recipes.py: the per-data-set table over seeds and the time-to-accuracy PNG (fake and tiny runs)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("train_recipes", REPO / "bench" / "train_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake(recipe, seed, accs, total):
    hist = [{"epoch": i, "phase": "head" if i == 0 else "partial", "elapsed_s": 10.0 * (i + 1), "val_acc": a,
             "val_balanced_acc": a - 0.01, "val_pos_recall": None} for i, a in enumerate(accs)]
    best = max(range(len(accs)), key=lambda i: accs[i])
    return {"recipe": recipe, "header": recipe, "data": "products28", "seed": seed, "capped": None,
            "stop_reason": "completed", "epochs_run": len(accs) - 1, "best_epoch": best, "best_acc": accs[best],
            "best_balanced_acc": accs[best] - 0.01, "best_elapsed_s": 10.0 * (best + 1), "pos_recall": None,
            "total_s": total, "load_before": "1.0 1.0 1.0", "load_after": "1.0 1.0 1.0", "history": hist}


def test_table_means_spreads_and_targets(tmp_path):
    b = _bench()
    res = [_fake("default", 0, [0.95, 0.97, 0.98], 30), _fake("default", 1, [0.95, 0.96, 0.96], 34),
           _fake("probe", 0, [0.96], 10), _fake("probe", 1, [0.94], 12)]
    text = b.table(res, [0.95, 0.97])
    assert "0.9700 ± 0.0100" in text  # best val accuracy of default: mean of 0.98 and 0.96, half the spread
    assert "0.9500 ± 0.0100" in text  # probe
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert "20s (1/2 seeds)" in lines["time to val accuracy >= 0.97"]
    assert "not reached" in lines["time to val accuracy >= 0.97"]
    assert "10s (1/2 seeds)" in lines["time to val accuracy >= 0.95"]  # probe: only seed 0 reaches 0.95
    assert b.first_time_at(res[0]["history"], 0.97)["epoch"] == 1
    from edgecls.core import plots

    if plots.available():
        png = plots.plot_time_to_accuracy(b.curves(res), tmp_path / "c.png")
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bench_runs_default_and_probe_on_tiny_data(tiny_data, tmp_path):
    import json

    from test_recipe_partial import _headless

    b = _bench()
    w = _headless("resnet18", tmp_path / "w.pth")
    rc = b.main(["--datasets", str(tiny_data), "--arch", "resnet18", "--weights", str(w), "--recipes",
                 "probe,default", "--seeds", "0", "--image-size", "32", "--quiet", "--json", str(tmp_path / "r.json"),
                 "--markdown", str(tmp_path / "t.md"), "--png", str(tmp_path / "c.png")])
    assert rc == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert [r["recipe"] for r in out["results"]] == ["probe", "default"]
    assert out["results"][0]["epochs_run"] == 0 and "linear probe" in (tmp_path / "t.md").read_text()
