"""Backbones joined in one network (``--arch a+b``, edgecls/reference/joined.py): the shared input re-normalized
and resized per branch exactly as each backbone's own preprocessing would, one nn.Linear head over the joined
features, errors naming the backbone at fault, and a checkpoint through train → eval → calibrate → export (one
ONNX graph, FP16 and INT8, parity gates) → the runtime.

Tiny random-init backbones (torchvision mobilenet_v3_small + timm test_resnet) at a small input: seconds.
The real shared weights are used by one slow test, skipped when absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from edgecls.core.errors import InputError  # noqa: E402
from edgecls.reference.models import WeightsError, build_model, get_arch, head_of, preprocess_for  # noqa: E402

TINY = "mobilenet_v3_small+timm:test_resnet"  # 1024 + 96 features; own inputs 224 and 160, ImageNet vs 0.5 mean/std
SHARED_W = Path(__file__).resolve().parents[2] / "shared" / "weights"


def _tiny_weights(tmp_path: Path) -> str:
    """Random-init state dicts saved as files: 'pretrained' weights for the head phase, no download."""
    import timm
    import torchvision

    torch.manual_seed(0)
    a, b = tmp_path / "mnv3s.pth", tmp_path / "teff.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict(), a)
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), b)
    return f"{a}+{b}"


def test_one_head_over_the_joined_features_and_the_lead_preprocessing():
    m = build_model(TINY, 3, weights="none").eval()
    head = head_of(m, TINY)
    assert head is m.head and isinstance(head, torch.nn.Linear)
    assert m.feature_dims == (1024, 96) and head.in_features == 1120 and head.out_features == 3
    assert get_arch(TINY).head == "head"
    # the input is the lead's (largest own size: mobilenet_v3_small's 224); --image-size scales it
    assert preprocess_for(TINY) == preprocess_for("mobilenet_v3_small")
    assert preprocess_for(TINY, 64).crop == 64
    assert [b.input_size(224) for b in m.branches] == [224, 160]
    assert [b.input_size(64) for b in m.branches] == [64, 46]
    assert [b.renormalize for b in m.branches] == [False, True]  # test_resnet: mean = std = 0.5
    # nothing but weights in the state dict: a checkpoint rebuilds the model from the arch alone
    again = build_model(TINY, 3, weights="none")
    again.load_state_dict(m.state_dict(), strict=True)


def test_each_branch_sees_what_its_own_preprocessing_gives():
    """The joined input, re-normalized in the network, equals the backbone's own normalization (to float error);
    the resize is the bilinear one the branch does on a tensor at the lead's size."""
    import torch.nn.functional as F

    from edgecls.runtime.preprocess import preprocess

    m = build_model(TINY, 3, weights="none").eval()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (80, 96, 3), dtype=np.uint8) for _ in range(2)]
    x = torch.from_numpy(preprocess(imgs, preprocess_for(TINY, 48)))
    teff = m.branches[1]
    own = preprocess_for("timm:test_resnet")
    size = teff.input_size(48)
    raw = x * torch.tensor(preprocess_for(TINY).std).view(1, 3, 1, 1) + torch.tensor(
        preprocess_for(TINY).mean).view(1, 3, 1, 1)
    expect = (F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False)
              - torch.tensor(own.mean).view(1, 3, 1, 1)) / torch.tensor(own.std).view(1, 3, 1, 1)
    with torch.no_grad():
        got, direct = teff(x), teff.backbone(expect)
        assert torch.allclose(got, direct, atol=1e-4)
        assert torch.equal(m.branches[0](x), m.branches[0].backbone(x))  # the lead: untouched


def test_bad_input_names_the_backbone(tmp_path):
    w = _tiny_weights(tmp_path)
    first = w.split("+")[0]
    with pytest.raises(WeightsError, match=r"backbone 2 of 2 \(timm:test_resnet\).*no such file"):
        build_model(TINY, 3, weights=f"{first}+{tmp_path / 'missing.pth'}")
    with pytest.raises(WeightsError, match=r"backbone 1 of 2 \(mobilenet_v3_small\).*does not match"):
        build_model(TINY, 3, weights=f"{w.split('+')[1]}+{w.split('+')[1]}")
    with pytest.raises(InputError, match="1 entry for the 2 joined backbones"):
        build_model(TINY, 3, weights=first)
    with pytest.raises(ValueError, match="backbone 'no_such_arch'"):
        get_arch("mobilenet_v2+no_such_arch")
    with pytest.raises(InputError, match="empty part"):
        get_arch("mobilenet_v2+")
    with pytest.raises(InputError, match=r"timm:dla46_c cannot be joined: its classifier is a Conv2d"):
        build_model("mobilenet_v3_small+timm:dla46_c", 3, weights="none")


def test_bad_input_through_the_cli(tiny_data, tmp_path, capsys):
    from cli_helpers import run_cli_captured

    from edgecls.core.errors import EXIT_INPUT

    w = _tiny_weights(tmp_path)
    code, _, err = run_cli_captured(["train", "--data", tiny_data, "--arch", TINY, "--weights",
                                     f"{w.split('+')[0]}+{tmp_path / 'nope.pth'}", "--out", tmp_path / "r",
                                     "--no-progress"], capsys)
    assert code == EXIT_INPUT and "timm:test_resnet" in err and "nope.pth" in err
    assert not (tmp_path / "r").exists()  # a bad --weights leaves no run folder behind


@pytest.mark.slow
def test_train_eval_calibrate_export_run(tiny_data, tmp_path, monkeypatch):
    """The joined checkpoint goes everywhere a checkpoint goes: eval, calibrate, export (one graph, FP16 + INT8
    with their gates, exit 0), Triton + DeepStream configs, and the runtime classifier."""
    import onnx
    from cli_helpers import run_cli

    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.runtime.classifier import Classifier

    run = tmp_path / "run"
    assert run_cli(["train", "--data", tiny_data, "--arch", TINY, "--weights", _tiny_weights(tmp_path),
                    "--recipe", "catalog", "--image-size", "48", "--out", run, "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["head"]["feature_dim"] == 1120 and summary["best_epoch"] == 0
    ck = load_checkpoint(run / "best.pt")
    assert ck.spec.arch == TINY and ck.spec.preprocess == preprocess_for(TINY, 48)
    assert run_cli(["eval", run / "best.pt", "--data", Path(tiny_data, "val"), "--out", tmp_path / "eval"]) == 0
    assert run_cli(["calibrate", run / "best.pt", "--data", Path(tiny_data, "val"), "--out", tmp_path / "cal.pt"]) == 0
    monkeypatch.chdir(tmp_path)  # no repo calib_images/: calibration falls back to the checkpoint's images
    out = tmp_path / "exp"
    assert run_cli(["export", run / "best.pt", "--out", out, "--fp16", "--int8", "--calib-count", "24",
                    "--triton", tmp_path / "triton", "--deepstream", tmp_path / "ds"]) == 0
    g = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in g.input] == ["input"] and len(g.output) == 1
    assert {"Resize", "Concat"} <= {n.op_type for n in g.node}  # one graph: the 2nd branch resized, joined
    parity = json.loads((out / "parity.json").read_text())
    assert parity["artifacts"]["model.onnx"]["max_abs_prob"] < 1e-4
    assert any((out / f).is_file() for f in ("model_fp16.onnx", "model_int8.onnx"))
    with Classifier.load(out / "model.onnx", device="cpu") as clf:
        assert clf.spec.arch == TINY and clf.spec.preprocess.crop == 48
        pred = clf.predict(str(next(Path(tiny_data, "val").glob("*/*.jpg"))))
    assert abs(sum(pred.probs) - 1) < 1e-4


@pytest.mark.slow
def test_real_weights_joined_input_matches_each_backbones_own_preprocessing():
    """With the shared ImageNet weights: MobileNetV2 + Lite0 on real photos, each branch's features from the joined
    input against the backbone alone at its own preprocessing (bicubic vs the lead's bilinear resize: close,
    not equal), and the features' cosine similarity high enough that the head sees the same thing."""
    mnv2, lite0 = SHARED_W / "mobilenet_v2_imagenet_features.pth", SHARED_W / "efficientnet_lite0_imagenet_timm.pth"
    data = SHARED_W.parent / "data" / "products28" / "val"
    if not (mnv2.is_file() and lite0.is_file() and data.is_dir()):
        pytest.skip("../shared weights or products28 absent")
    from edgecls.runtime.preprocess import load_image, preprocess

    arch = "mobilenet_v2+timm:tf_efficientnet_lite0"
    m = build_model(arch, 28, weights=f"{mnv2}+{lite0}").eval()
    alone = build_model("timm:tf_efficientnet_lite0", 28, weights=str(lite0)).eval()
    files = sorted(data.glob("*/*.jpg"))[::30][:8]
    imgs = [load_image(p) for p in files]
    with torch.no_grad():
        joined = m.branches[1](torch.from_numpy(preprocess(imgs, preprocess_for(arch))))
        feats = []
        h = head_of(alone, "timm:tf_efficientnet_lite0").register_forward_hook(
            lambda mod, inp, out: feats.append(inp[0]))
        alone(torch.from_numpy(preprocess(imgs, preprocess_for("timm:tf_efficientnet_lite0"))))
        h.remove()
    cos = torch.nn.functional.cosine_similarity(joined, feats[0], dim=1)
    assert float(cos.min()) > 0.9, cos


def test_fp16_of_a_joined_graph_with_tf_same_padding():
    """timm's tf_ models compute their "same" padding from the input shape through Cast nodes: the FP16 form must
    still load in onnxruntime and agree with PyTorch (it did not, alone or joined, before export/fp16.py retargeted
    those Casts)."""
    import onnxruntime as ort

    from edgecls.export.fp16 import to_fp16
    from edgecls.export.onnx_export import export_onnx
    from edgecls.runtime.spec import ModelSpec

    arch = "mobilenet_v3_small+timm:tf_efficientnet_lite0"
    torch.manual_seed(0)
    m = build_model(arch, 3, weights="none").eval()
    spec = ModelSpec(arch=arch, classes=("a", "b", "c"), preprocess=preprocess_for(arch, 32))
    proto, _ = export_onnx(m, spec)
    fp16 = to_fp16(proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"input": x})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 0.02 * max(1.0, np.abs(ref).max())
