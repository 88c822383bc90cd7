"""Orientation: ``edgecls eval --rotations`` (turned after decoding, before the one preprocessing) and the training
``--rotate`` option (random 90/180/270 turns). Tiny generated data, a few seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecls.core.errors import InputError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_data):
    from models_helpers import make_tiny_checkpoint, tiny_spec

    from edgecls.runtime.spec import PreprocessSpec

    out = tmp_path_factory.mktemp("rot_model")
    spec = tiny_spec(preprocess=PreprocessSpec(resize=36, crop=32), threshold=0.5)
    return make_tiny_checkpoint(tiny_data, out / "best.pt", head="centred", spec=spec, record_data=False)


def _turned_copy(src: Path, dst: Path, degrees: int) -> Path:
    """The folder with every image turned ``degrees`` counter-clockwise on disk (PNG: lossless)."""
    for p in sorted(src.rglob("*.*")):
        q = dst / p.relative_to(src).with_suffix(".png")
        q.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(p) as im:
            im.convert("RGB").rotate(degrees, expand=True).save(q)
    return dst


def test_eval_rotations_match_images_turned_on_disk(tiny_ckpt, tiny_data, tmp_path):
    from edgecls.evaluation.evaluate import EvalConfig, evaluate

    val = tiny_data / "val"
    lossless = _turned_copy(val, tmp_path / "upright", 0)  # PNG copies: the same pixels the JPEGs decode to
    res = evaluate(EvalConfig(model=str(tiny_ckpt), data=str(lossless), batch=4, rotations=True))
    assert list(res.rotations) == ["0", "90", "180", "270"]
    assert res.rotations["0"]["accuracy"] == pytest.approx(res.report.accuracy)
    assert res.rotations["0"]["accuracy_drop"] == 0
    for deg in (90,):
        turned = evaluate(EvalConfig(model=str(tiny_ckpt), data=str(_turned_copy(val, tmp_path / f"r{deg}", deg)),
                                     batch=4))
        assert res.rotations[str(deg)]["accuracy"] == pytest.approx(turned.report.accuracy)
        assert res.rotations[str(deg)]["balanced_accuracy"] == pytest.approx(turned.report.balanced_accuracy)
    assert "rotations:" in res.table() and "270 deg" in res.table()
    assert json.loads(json.dumps(res.to_dict()))["rotations"]["180"]["n"] == res.report.n
    plain = evaluate(EvalConfig(model=str(tiny_ckpt), data=str(lossless), batch=4))
    assert plain.rotations is None and "rotations:" not in plain.table()


def test_eval_rotations_cli(tiny_ckpt, tiny_data, tmp_path):
    import typer
    from typer.testing import CliRunner

    from edgecls.evaluation.cli import eval_command

    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("eval")(eval_command)
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["eval", str(tiny_ckpt), "--data", str(tiny_data / "val"), "--rotations",
                                 "--no-files", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert "90 deg" in r.output
    assert set(json.loads((tmp_path / "e.json").read_text())["rotations"]) == {"0", "90", "180", "270"}


def test_rotated_direction_and_bad_angle():
    from edgecls.evaluation.data import rotated

    a = np.zeros((2, 3, 3), np.uint8)
    a[0, 2] = 255  # top-right pixel
    im = Image.fromarray(a)
    assert np.asarray(rotated(im, 90))[0, 0].max() == 255  # ccw: the top-right corner goes to the top-left
    assert np.asarray(rotated(im, 90)).shape[:2] == (3, 2)
    assert np.array_equal(np.asarray(rotated(im, 0)), a)
    with pytest.raises(InputError, match="90, 180, 270"):
        rotated(im, 45)


def test_random_rot90_turns_about_half_uniformly():
    from edgecls.train.data import RandomRot90

    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    im = Image.fromarray(a)
    torch.manual_seed(0)
    outs = [np.asarray(RandomRot90(0.5)(im)) for _ in range(400)]
    kinds = {"0": 0, "90": 0, "180": 0, "270": 0}
    for o in outs:
        for k in range(4):
            if o.shape == np.rot90(a, k).shape and np.array_equal(o, np.rot90(a, k)):
                kinds[str(90 * k)] += 1
                break
        else:
            raise AssertionError("not a quarter turn of the input")
    assert 160 <= kinds["0"] <= 240 and all(40 <= kinds[k] <= 100 for k in ("90", "180", "270")), kinds
    assert all(np.array_equal(np.asarray(RandomRot90(0.0)(im)), a) for _ in range(20))


def test_rotate_option_reaches_the_recipe_and_the_transform():
    from edgecls.runtime.spec import PreprocessSpec
    from edgecls.train.cli import _new_config
    from edgecls.train.config import RECIPES
    from edgecls.train.data import RandomRot90, train_transform

    kw = dict(data="x", recipe="fast", arch=None, weights=None, positive=None, target_precision=None, delta=None,
              coverage=None, calib_fraction=None, epochs=None, batch_size=None, image_size=None, lr=None,
              balance=None, patience=None, val_fraction=None, seed=None, workers=None, device=None, out=None,
              name="exp", exist_ok=False, max_minutes=None, amp=True, progress=False)
    assert _new_config(rotate=True, **kw).recipe.rotate == 0.5
    assert _new_config(rotate=None, **kw).recipe.rotate == RECIPES["fast"].rotate == 0.0
    with pytest.raises(InputError, match="rotate"):
        RECIPES["fast"].override(rotate=1.5)
    spec = PreprocessSpec.for_image_size(32)
    assert any(isinstance(t, RandomRot90) for t in train_transform(32, (0.5, 1), True, spec, 0.5).transforms)
    assert not any(isinstance(t, RandomRot90) for t in train_transform(32, (0.5, 1), True, spec).transforms)


def test_rotate_gives_the_head_turned_views_in_the_recipe_share():
    """--rotate reaches the head phase too (the head alone is often the kept model): features of every train image
    turned 90/180/270°, upright ones repeated to keep the share; a train image that fails now falls back upright."""
    from types import SimpleNamespace

    from edgecls.train.linear_head import _with_turned_views

    items = ["a", "b", "c", "d"]
    calls = []

    def run_eval(model, it, desc, hook_features=False, quarter_turns=0):
        calls.append((quarter_turns, hook_features))
        return np.full((len(it), 2), float(quarter_turns), np.float32), np.arange(len(it))

    runner = SimpleNamespace(setup=SimpleNamespace(data=SimpleNamespace(train=items)), run_eval=run_eval)
    feats, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    x, yy, _ = _with_turned_views(runner, None, feats, y, 0.5)
    assert calls == [(1, True), (2, True), (3, True)]
    assert x.shape == (24, 2) and np.mean(x[:, 0] > 0) == 0.5  # half turned, as the fine-tuning epochs draw
    assert sorted(set(x[:, 0])) == [0.0, 1.0, 2.0, 3.0] and list(yy) == list(y) * 6

    def failing(model, it, desc, hook_features=False, quarter_turns=0):
        return np.zeros((len(it) - 1, 2), np.float32), np.arange(len(it) - 1)

    runner.run_eval = failing
    x, yy, _ = _with_turned_views(runner, None, feats, y, 0.5)
    assert x is feats and yy is y


def test_eval_batches_turn_like_turned_photos():
    """The centre crop of a photo turned k × 90° is the turned centre crop up to a pixel of crop rounding (what
    run_eval's quarter_turns relies on): on a smooth photo-like image the two agree closely."""
    from edgecls.runtime.preprocess import preprocess
    from edgecls.runtime.spec import PreprocessSpec

    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    im = np.stack([127 + 120 * np.sin(xx / 17), 127 + 120 * np.cos(yy / 13), 127 + 100 * np.sin((xx + yy) / 23)],
                  -1).astype(np.uint8)
    spec = PreprocessSpec.for_image_size(224)
    up = torch.from_numpy(preprocess([im], spec))
    for k in (1, 2, 3):
        turned = torch.from_numpy(preprocess([np.ascontiguousarray(np.rot90(im, k))], spec))
        diff = (torch.rot90(up, k, dims=(2, 3)) - turned).abs()
        assert diff.mean() < 0.15, (k, float(diff.mean()))  # normalized units: a fraction of one std
        other = (torch.rot90(up, -k, dims=(2, 3)) - turned).abs().mean() if k != 2 else torch.tensor(9.0)
        assert diff.mean() < other  # and the direction is right (counter-clockwise, like np.rot90)
