"""`edgecls label DIR`: the labelling store and its HTTP API (no browser): bulk assignment to existing and new
classes, the ImageFolder written, the class-name rule, a labels file naming a class twice, the token."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.core.errors import InputError
from edgecls.runtime.collect.config import CollectConfig
from edgecls.runtime.collect.sink import Collector
from edgecls.runtime.decision import Prediction
from edgecls.runtime.label.server import LabelApp
from edgecls.runtime.label.store import LabelStore
from edgecls.runtime.sources.frame import Frame

CLASSES = ("cup", "lamp", "watch")


def _pred(top: int, reason: str) -> Prediction:
    probs = [0.2, 0.2, 0.2]
    probs[top] = 0.6
    return Prediction(label=CLASSES[top], confidence=0.6, class_index=top, class_name=CLASSES[top],
                      probs=tuple(probs), topk=((CLASSES[top], 0.6),), decision="unknown" if reason == "unknown" else
                      CLASSES[top], threshold=0.5, set=() if reason == "empty-set" else (CLASSES[top],),
                      unknown=reason == "unknown", ood_score=1.0)


def make_collection(root: Path, n: int = 12) -> Path:
    """A collection of ``n`` distinct images, as `run --collect` writes it."""
    from edgecls.runtime.run.records import prediction_record

    c = Collector(CollectConfig(str(root), queue=100), {"name": "m.onnx", "sha256": "0" * 64, "classes": list(CLASSES)})
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.asarray(Image.fromarray(rng.integers(0, 255, (5, 5, 3), dtype=np.uint8)).resize((60, 48),
                                                                                               Image.BICUBIC))
        f = Frame(source="photos", index=i, image=img, path=f"/photos/p{i:02d}.jpg")
        p = _pred(i % 2, "unknown" if i < n // 2 else "empty-set")
        c.offer(f, p, prediction_record(f, p, 0.0, 0.0, 1), live=False)
    c.close()
    assert c.outcomes()["kept"] == n
    return root


@pytest.fixture
def collection(tmp_path) -> Path:
    return make_collection(tmp_path / "col")


def test_store_groups_assigns_writes_imagefolder_and_labels_file(collection):
    s = LabelStore(collection)
    st = s.state()
    assert st["classes"] == list(CLASSES) and st["counts"] == {"pending": 12, "labelled": 0, "discarded": 0}
    assert {g["key"] for g in st["groups"]} == {"cup · unknown", "lamp · unknown", "cup · empty-set",
                                                 "lamp · empty-set"}
    ids = [it["id"] for it in st["items"]]
    out = s.assign(ids[:5], "  teapot ")
    assert out == {"assigned": 5, "class": "teapot", "new_class": True}
    s.assign(ids[5:7], "lamp")
    s.discard([ids[7]])
    s.assign([ids[0]], "lamp")  # moved: out of teapot/, into lamp/
    s.reset([ids[1]])
    lab = collection / "labelled"
    assert sorted(p.name for p in (lab / "teapot").iterdir()) == sorted(f"{i}.jpg" for i in ids[2:5])
    assert sorted(p.name for p in (lab / "lamp").iterdir()) == sorted(f"{i}.jpg" for i in (ids[0], ids[5], ids[6]))
    assert (lab / "lamp" / f"{ids[0]}.jpg").read_bytes() == (collection / "images" / f"{ids[0]}.jpg").read_bytes()
    labels = json.loads((collection / "labels.json").read_text())
    assert labels["classes"] == ["cup", "lamp", "watch", "teapot"] and labels["discarded"] == [ids[7]]
    assert labels["labels"][ids[2]] == "teapot" and ids[1] not in labels["labels"]
    # a new store (the page restarted) sees the same; a class folder train/calibrate read as ImageFolder
    again = LabelStore(collection).state()
    assert again["counts"] == {"pending": 5, "labelled": 6, "discarded": 1}
    from edgecls.core.images import class_folders, list_images

    assert [d.name for d in class_folders(lab)] == ["lamp", "teapot"] and len(list_images(lab)) == 6


@pytest.mark.parametrize("name", ["", "   ", "a/b", "..", "../x", "a..b", ".hidden", "x\\y", "uncertain",
                                  "Unknown", "c:d", "tab\there", "x" * 65])
def test_class_names_that_could_leave_the_folder_are_refused(collection, name):
    s = LabelStore(collection)
    ids = [s.state()["items"][0]["id"]]
    with pytest.raises(InputError, match="refused: .*a class name is 1 to 64 characters"):
        s.assign(ids, name)
    assert not (collection / "labelled").exists() and not (collection / "labels.json").exists()


def test_a_name_differing_only_by_case_is_the_same_class(collection):
    s = LabelStore(collection)
    with pytest.raises(InputError, match="differs only by case from the existing class 'cup'"):
        s.assign([s.state()["items"][0]["id"]], "CUP")


def test_labels_file_naming_a_class_twice_is_a_clear_error(collection):
    s = LabelStore(collection)
    ids = [it["id"] for it in s.state()["items"]]
    s.assign(ids[:2], "teapot")
    path = collection / "labels.json"
    data = json.loads(path.read_text())
    data["classes"].append("teapot")
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"names class 'teapot' twice, at classes\[3\] and classes\[4\]"):
        LabelStore(collection)
    data["classes"][-1] = "Teapot"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="differ only by case"):
        LabelStore(collection)
    data["classes"][-1] = "../up"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="refused"):
        LabelStore(collection)
    assert len(list((collection / "labelled" / "teapot").iterdir())) == 2  # nothing lost
    path.write_bytes(before)


def test_cli_refuses_a_folder_without_manifest_and_a_bad_labels_file(collection, tmp_path, capsys):
    from cli_helpers import run_cli_captured as cli

    code, _, err = cli(["label", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no manifest.jsonl" in err
    (collection / "labels.json").write_text(json.dumps({"format": "edgecls-labels", "classes": ["a", "a"]}))
    code, _, err = cli(["label", str(collection)], capsys)
    assert code == 2 and "names class 'a' twice" in err
    code, _, err = cli(["label", str(collection), "--host", "0.0.0.0"], capsys)
    assert code == 2


# -- HTTP ----------------------------------------------------------------------------------------------------------
def call(base: str, path: str, body=None, token=None, ctype="application/json", origin=None):
    headers = {"Content-Type": ctype} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if origin:
        headers["Origin"] = origin
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, (json.loads(data) if r.headers.get_content_type() == "application/json" else data)
    except urllib.error.HTTPError as e:
        data = e.read()
        try:
            return e.code, json.loads(data)
        except ValueError:
            return e.code, data.decode()


@pytest.fixture
def served(collection):
    app = LabelApp(LabelStore(collection), "127.0.0.1", 0)
    yield app, app.url.rstrip("/"), collection
    app.close()


def test_http_api_assign_discard_reset_and_images(served):
    app, base, col = served
    code, st = call(base, "/api/state")
    assert code == 200 and st["counts"]["pending"] == 12
    ids = [it["id"] for it in st["items"]]
    code, img = call(base, st["items"][0]["url"])
    assert code == 200 and img[:2] == b"\xff\xd8"
    code, out = call(base, "/api/assign", {"ids": ids[:3], "class": "teapot"})
    assert code == 200 and out["new_class"] and out["counts"]["labelled"] == 3
    code, out = call(base, "/api/discard", {"ids": ids[3:4]})
    assert code == 200 and out["counts"]["discarded"] == 1
    code, out = call(base, "/api/reset", {"ids": ids[:1]})
    assert code == 200 and out["counts"] == {"pending": 9, "labelled": 2, "discarded": 1}
    assert len(list((col / "labelled" / "teapot").iterdir())) == 2
    code, page = call(base, "/")
    assert code == 200 and b"label.js" in page and b"http" not in page  # no external URL


def test_http_api_refuses_bad_input_with_the_rule(served):
    app, base, col = served
    ids = [it["id"] for it in call(base, "/api/state")[1]["items"]]
    for bad in ("../evil", "a/b", "", ".."):
        code, out = call(base, "/api/assign", {"ids": ids[:1], "class": bad})
        assert code == 400 and "a class name is 1 to 64 characters" in out["error"], (bad, out)
    assert not (col / "labelled").exists() and not (col.parent / "evil").exists()
    assert call(base, "/api/assign", {"ids": ["nope"], "class": "x"})[0] == 404
    assert call(base, "/api/assign", {"ids": ids[:1]})[0] == 400  # no class
    assert call(base, "/api/assign", {"ids": [], "class": "x"})[0] == 400
    assert call(base, "/api/assign", {"ids": ids[:1], "class": "x"}, ctype="text/plain")[0] == 415
    assert call(base, "/api/assign", {"ids": ids[:1], "class": "x"}, origin="http://evil.example")[0] == 403
    assert call(base, "/images/..%2Fmanifest.jsonl.jpg")[0] == 404
    assert call(base, "/api/nothing", {"ids": ids[:1]})[0] == 404
    assert call(base, "/api/state")[1]["counts"]["labelled"] == 0


def test_token_is_needed_on_every_request_beyond_localhost(collection):
    with pytest.raises(InputError, match="EDGECLS_TOKEN"):
        LabelApp(LabelStore(collection), "0.0.0.0", 0, None)
    app = LabelApp(LabelStore(collection), "127.0.0.1", 0, "s3cret")  # a token set: asked even on localhost
    base = app.url.rstrip("/")
    try:
        for path in ("/", "/api/state", "/images/x.jpg"):
            code, body = call(base, path)
            assert code == 401 and "access token" in body
        ids = [it["id"] for it in call(base, "/api/state", token="s3cret")[1]["items"]]
        assert call(base, "/api/assign", {"ids": ids[:1], "class": "x"})[0] == 401
        assert call(base, "/api/assign", {"ids": ids[:1], "class": "x"}, token="wrong")[0] == 401
        assert not (collection / "labelled").exists()
        assert call(base, "/api/assign", {"ids": ids[:1], "class": "x"}, token="s3cret")[0] == 200
    finally:
        app.close()
