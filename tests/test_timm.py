"""timm backbones (``--arch timm:<name>``): creation, the preprocessing spec from the model's pretrained config,
weights loading and its errors, training through the CLI and export parity (TF "same" padding → Pad + Conv).

Random-init tf_efficientnet_lite0 at a small input on generated data: no download, seconds. Skipped without timm.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from edgecls.reference.models import (  # noqa: E402
    WeightsError,
    build_model,
    get_arch,
    head_of,
    preprocess_for,
)

LITE0 = "timm:tf_efficientnet_lite0"


def test_spec_from_the_pretrained_config():
    p = preprocess_for(LITE0)
    assert (p.crop, p.resize, p.mean, p.std, p.interpolation) == (224, 256, (0.5,) * 3, (0.5,) * 3, "bicubic")
    p2 = preprocess_for("timm:tf_efficientnet_lite2")
    assert (p2.crop, p2.resize) == (260, 292)  # floor(260 / 0.89)
    small = preprocess_for(LITE0, 64)
    assert (small.crop, small.resize) == (64, 73)
    tv = preprocess_for("mobilenet_v2", 224)  # torchvision archs: the ImageNet convention as before
    assert (tv.crop, tv.resize, tv.interpolation) == (224, 256, "bilinear")


def test_arch_head_and_unknown_names():
    assert get_arch(LITE0).head == "classifier"
    with pytest.raises(ValueError, match="unknown timm model"):
        get_arch("timm:no_such_model_xyz")
    with pytest.raises(ValueError, match="timm:<name>"):
        get_arch("no_such_arch")
    m = build_model(LITE0, 3, weights="none")
    assert head_of(m, LITE0).out_features == 3


def test_weights_from_a_file_and_the_errors(tmp_path, monkeypatch):
    import timm

    src = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)  # 1000-class head
    path = tmp_path / "lite0.pth"
    torch.save(src.state_dict(), path)
    m = build_model(LITE0, 5, weights=str(path))
    key = "conv_stem.weight"
    assert torch.equal(m.state_dict()[key], src.state_dict()[key])
    assert head_of(m, LITE0).out_features == 5  # head fresh, backbone loaded
    # another architecture's file: refused, naming the missing keys
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not match"):
        build_model(LITE0, 5, weights=str(tmp_path / "other.pth"))
    with pytest.raises(WeightsError, match="no such file"):
        build_model(LITE0, 5, weights=str(tmp_path / "missing.pth"))
    # imagenet with nothing cached: a clear error, never a download
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match="--weights PATH"):
        build_model(LITE0, 5, weights="imagenet")


@pytest.mark.slow
def test_train_export_parity_run(tiny_data, tmp_path):
    """CLI train (head phase + 1 epoch) → export (FP32 parity through Pad + Conv) → the runtime classifier."""
    import timm
    from cli_helpers import run_cli

    from edgecls.runtime.spec import ModelSpec

    w = tmp_path / "w.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict(), w)
    run = tmp_path / "run"
    assert run_cli(["train", "--data", tiny_data, "--arch", LITE0, "--weights", w, "--image-size", "64",
                    "--epochs", "1", "--batch-size", "8", "--out", run, "--no-progress"]) == 0
    ck = torch.load(run / "best.pt", weights_only=True)
    spec = ModelSpec.from_dict(ck["spec"])
    assert spec.arch == LITE0 and spec.preprocess.mean == (0.5,) * 3 and spec.preprocess.interpolation == "bicubic"
    assert (spec.preprocess.crop, spec.preprocess.resize) == (64, 73)
    out = tmp_path / "exp"
    assert run_cli(["export", run / "best.pt", "--out", out]) == 0
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "Conv" in ops and "Pad" in ops  # TF "same" padding exported as Pad + Conv
    parity = json.loads((out / "parity.json").read_text())
    fp32 = parity["artifacts"]["model.onnx"]
    assert not fp32["failures"] and fp32["max_abs_prob"] < 1e-4
    from edgecls.runtime.classifier import Classifier

    with Classifier.load(out / "model.onnx", device="cpu") as clf:
        assert clf.spec.preprocess == spec.preprocess  # the spec travels into the ONNX metadata
        img = next(Path(tiny_data, "val").glob("*/*.jpg"))
        pred = clf.predict(str(img))
    assert pred.class_name in spec.classes and abs(sum(pred.probs) - 1) < 1e-4
