"""``edgecls train --add-classes DIR --from best.pt`` on a tiny checkpoint: the grown checkpoint loads like any
other (backbone untouched, old classes first, calibrated on held-out images that include the new class), the
features of the old images are cached, and bad input is refused with a clear error that writes nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgecls.core.errors import InputError


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_data, tmp_path_factory) -> Path:
    from models_helpers import make_tiny_checkpoint

    return make_tiny_checkpoint(tiny_data, tmp_path_factory.mktemp("ck") / "best.pt")


@pytest.fixture(scope="module")
def new_photos(tmp_path_factory) -> Path:
    from edgecls.synthetic import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("new"), counts={"tablet": 10}, splits=(), size=64, seed=7)


def _cfg(ckpt, new, out, **kw):
    from edgecls.train.add_classes import AddClassesConfig

    return AddClassesConfig(checkpoint=Path(ckpt), new=Path(new), out=Path(out), **kw)


def test_grown_checkpoint_keeps_the_backbone_and_states_its_confidence(tiny_ckpt, new_photos, tmp_path):
    import torch

    from edgecls.reference.checkpoint import load_checkpoint
    from edgecls.train.add_classes import add_classes

    res = add_classes(_cfg(tiny_ckpt, new_photos, tmp_path / "out"))
    old, new = load_checkpoint(tiny_ckpt), load_checkpoint(res.checkpoint)
    assert res.added == ("tablet",) and new.spec.classes == ("mobile", "other", "tablet")
    assert new.spec.positive == "mobile" and new.spec.confidence is not None
    for k, v in old.state_dict.items():
        if not k.startswith("fc."):
            assert torch.equal(v, new.state_dict[k]), k  # no backbone retraining
    assert new.state_dict["fc.weight"].shape[0] == 3
    model = new.build_model()  # loads strictly, like any checkpoint
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    s = res.summary
    assert s["heldout"]["new"] == 3 and s["fit"]["new"] == 7  # 30 % of 10 held out to calibrate
    assert new.spec.confidence.n == s["heldout"]["rows"]  # calibrated on held-out images incl. the new class
    assert "new photos" in new.spec.confidence.source
    held = {p for p, _ in new.items("val")}
    assert sum("tablet" in p for p in held) == 3 and set(new.data["calib"]) <= held
    assert Path(s["feature_cache"]).is_file()
    again = add_classes(_cfg(tiny_ckpt, new_photos, tmp_path / "out2"))  # the old images' features come cached
    assert again.summary["fit"]["rows"] == s["fit"]["rows"]


def test_a_class_that_exists_is_refused_by_name_unless_asked(tiny_ckpt, new_photos, tmp_path):
    from edgecls.train.add_classes import add_classes

    mixed = tmp_path / "mixed"
    shutil.copytree(new_photos, mixed)
    shutil.copytree(new_photos / "tablet", mixed / "mobile")
    with pytest.raises(InputError, match=r"'mobile' already is a class of the model.*--add-to-existing"):
        add_classes(_cfg(tiny_ckpt, mixed, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    res = add_classes(_cfg(tiny_ckpt, mixed, tmp_path / "out", extend=True))
    assert res.added == ("tablet",) and res.summary["extended"] == ["mobile"]


def test_empty_or_missing_folders_and_mismatched_checkpoints_are_refused(tiny_ckpt, new_photos, tiny_data,
                                                                         tmp_path):
    import dataclasses

    from edgecls.reference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from edgecls.train.add_classes import add_classes

    empty = tmp_path / "empty"
    (empty / "tablet").mkdir(parents=True)
    with pytest.raises(InputError, match="'tablet'.*hold no images"):
        add_classes(_cfg(tiny_ckpt, empty, tmp_path / "o1"))
    with pytest.raises(InputError, match="not a folder"):
        add_classes(_cfg(tiny_ckpt, tmp_path / "nope", tmp_path / "o1"))
    with pytest.raises(InputError, match="has classes .* but the checkpoint was trained on"):
        other = tmp_path / "other_data"
        shutil.copytree(tiny_data, other)
        for split in ("train", "val"):
            (other / split / "other").rename(other / split / "else")
        add_classes(_cfg(tiny_ckpt, new_photos, tmp_path / "o1", data=other))
    ck = load_checkpoint(tiny_ckpt)
    bad = dataclasses.replace(ck, state_dict={k: v for k, v in ck.state_dict.items() if k != "fc.bias"})
    save_checkpoint(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not match its spec"):
        add_classes(_cfg(tmp_path / "bad.pt", new_photos, tmp_path / "o1"))
    assert not (tmp_path / "o1").exists()


def test_cli_exit_code_and_message(tiny_ckpt, new_photos, tmp_path, capsys):
    from cli_helpers import run_cli_captured

    code, _, err = run_cli_captured(["train", "--from", str(tiny_ckpt)], capsys)
    assert code == 2 and "--add-classes DIR and --from best.pt go together" in err
    mixed = tmp_path / "mixed"
    shutil.copytree(new_photos / "tablet", mixed / "other")
    code, _, err = run_cli_captured(["train", "--add-classes", str(mixed), "--from", str(tiny_ckpt), "--out",
                                     str(tmp_path / "o")], capsys)
    assert code == 2 and "'other' already is a class of the model" in err
