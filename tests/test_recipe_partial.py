"""The ``partial`` recipe (edgecls.train.partial_finetune): front frozen and cached, tail trained; tiny data."""
from __future__ import annotations

import pytest
import torch

from edgecls.core.errors import InputError
from edgecls.reference.checkpoint import load_checkpoint
from edgecls.reference.models import build_model
from edgecls.train.config import RECIPES, TrainConfig
from edgecls.train.partial_finetune import lr_factor, split_model
from edgecls.train.trainer import train


def _headless(arch: str, path):
    torch.manual_seed(1)
    head = {"mobilenet_v2": "classifier.1.", "resnet18": "fc."}[arch]
    torch.save({k: v for k, v in build_model(arch, 2, "none").state_dict().items() if not k.startswith(head)}, path)
    return path


@pytest.mark.parametrize("arch,blocks", [("resnet18", 1), ("mobilenet_v2", 5), ("mobilenet_v3_small", 3)])
def test_split_model_tail_of_front_is_the_model(arch, blocks):
    torch.manual_seed(0)
    model = build_model(arch, 3, "none").eval()
    front, tail = split_model(model, arch, blocks)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tail(front(x)), model(x), atol=1e-5)
    assert {id(p) for p in tail.parameters()} <= {id(p) for p in model.parameters()}  # shared, not copies
    with pytest.raises(InputError, match="tail_blocks"):
        split_model(model, arch, 100)


def test_lr_factor_warms_up_then_decays():
    r = RECIPES["partial"]
    f = [lr_factor(r, s, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and max(f) == pytest.approx(1.0) and f.index(max(f)) == 9
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] < 0.01


@pytest.mark.slow  # ~15 s on a quiet 2-core machine; 214 s measured under load 17
def test_partial_recipe_trains_tail_only_and_checkpoints_a_full_model(tiny_data, tmp_path):
    weights = _headless("resnet18", tmp_path / "r18.pth")
    init = build_model("resnet18", 2, str(weights)).state_dict()
    run = tmp_path / "run"
    recipe = RECIPES["partial"].override(epochs=2, image_size=32, views=1, batch_size=32, tail_blocks=1,
                                         patience=None, head_l2=0.01)
    res = train(TrainConfig(data=str(tiny_data), arch="resnet18", weights=str(weights), out=str(run),
                            positive="mobile", recipe=recipe, progress=False, calib_fraction=0.0))
    assert [(h["epoch"], h["phase"]) for h in res.history] == [(0, "head"), (1, "partial"), (2, "partial")]
    assert res.history[1]["train_samples"] == 32 * 2  # eval view + 1 augmented view of 32 images
    last = load_checkpoint(run / "last.pt")
    model = last.build_model()  # strict load: a normal full model
    sd = model.state_dict()
    assert all(torch.equal(sd[k], init[k]) for k in init if k.startswith(("conv1", "layer1", "layer3")))
    assert any(not torch.equal(sd[k], init[k]) for k in init if k.startswith("layer4") and "weight" in k)
    # what was judged is what ships: the full model on the runtime preprocessing gives the recorded val accuracy
    from edgecls.runtime.metrics import classification_report, softmax
    from edgecls.runtime.preprocess import load_image, preprocess

    items = last.items("val")
    x = preprocess([load_image(p) for p, _ in items], last.spec.preprocess)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x)).numpy()
    rep = classification_report([y for _, y in items], softmax(logits), last.spec.classes)
    row = res.history[-1]
    assert rep.accuracy == pytest.approx(float(row["val_acc"]))


def test_partial_recipe_from_scratch_trains_like_fast():
    r = RECIPES["partial"].for_weights(False)
    assert r.finetune == "full" and r.balance == "sampler" and r.name == "partial"
    with pytest.raises(InputError, match="finetune"):
        RECIPES["partial"].override(finetune="half")
