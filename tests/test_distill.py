"""Distillation for the fine-tuning epochs (train/distill.py, the ``catalog`` recipe): the loss, the out-of-fold
teacher targets, and a tiny run through the CLI with a teacher backbone (random weights, generated data)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecls.train.distill import DistillLoss, oof_logits  # noqa: E402


def test_loss_is_ce_at_zero_and_kl_at_one():
    out = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    idx = torch.tensor([0, 2, 4, 6, 8, 9])
    ce = torch.nn.CrossEntropyLoss()
    assert DistillLoss(teacher, 0.0, 2.0, ce, "cpu")(out, y, idx).item() == pytest.approx(ce(out, y).item())
    same = torch.as_tensor(teacher)[idx]
    assert DistillLoss(teacher, 1.0, 2.0, ce, "cpu")(same, y, idx).item() == pytest.approx(0.0, abs=1e-6)
    assert DistillLoss(teacher, 1.0, 2.0, ce, "cpu")(out, y, idx).item() > 0


def test_oof_logits_never_score_their_own_fit():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    x = rng.normal(size=(36, 5)).astype(np.float32)
    x[np.arange(36), y] += 3.0
    oof = oof_logits(x, y, 3, l2=1e-2, seed=0, weights=None, max_iter=50)
    assert oof.shape == (36, 3) and np.mean(oof.argmax(1) == y) > 0.8
    x_noise = rng.normal(size=(36, 5)).astype(np.float32)  # no signal: out of fold cannot be near-perfect
    assert np.mean(oof_logits(x_noise, y, 3, 1e-4, 0, None, 50).argmax(1) == y) < 0.8


@pytest.mark.slow
def test_catalog_recipe_with_a_teacher_through_the_cli(tiny_data, tmp_path):
    import torchvision
    from cli_helpers import run_cli

    torch.manual_seed(0)
    w = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), w)
    run = tmp_path / "run"
    assert run_cli(["train", "--data", tiny_data, "--arch", "resnet18", "--weights", w, "--recipe", "catalog",
                    "--teacher-arch", "mobilenet_v2", "--teacher-weights", "none", "--image-size", "32",
                    "--epochs", "1", "--out", run, "--no-progress"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["recipe"]["name"] == "catalog" and s["recipe"]["distill"] == 0.7
    assert s["head"]["teacher"]["feature_dim"] == 512 + 1280  # student + teacher features joined
