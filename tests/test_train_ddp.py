"""DDP under torchrun: 2 gloo processes on CPU, head phase (features gathered over ranks) and one fine-tune epoch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from edgecls.reference.checkpoint import load_checkpoint
from edgecls.reference.models import build_model


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tiny_data, tmp_path):
    torch.manual_seed(2)
    state = build_model("mobilenet_v3_small", 2, "none").state_dict()
    weights = tmp_path / "features.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.3.")}, weights)
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "edgecls.train",
        "--data", str(tiny_data), "--arch", "mobilenet_v3_small", "--weights", str(weights),
        "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--positive", "mobile",
        "--out", str(run), "--no-progress", "--workers", "0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert p.stdout.count("balanced accuracy") == 1, "only rank 0 prints the summary"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert [h["phase"] for h in summary["history"]] == ["head", "finetune"]
    head, ft = summary["history"]
    assert head["train_samples"] == 32  # features of both ranks' shards gathered
    assert ft["train_samples"] == 32  # 2 ranks x 16 samples (DistributedSampler-style shards)
    ck = load_checkpoint(run / "best.pt")
    ck.build_model()
    assert len(ck.items("val")) == 10
