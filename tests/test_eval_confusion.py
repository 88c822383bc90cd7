"""The confusion matrix at catalog scale: top confused pairs, per-class table sorted by F1, 120 columns, the whole
matrix as CSV and PNG (edgecls.evaluation.confusion and edgecls eval's files)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from edgecls.evaluation.confusion import (
    WIDTH,
    confusion_csv,
    matrix_width,
    plot_confusion,
    report_text,
    top_confusions,
)
from edgecls.runtime import metrics as M

CLASSES = [f"class_{i:02d}_{'x' * (i % 7)}" for i in range(28)]


def _report(n_classes: int = 28, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), 10)
    logits = np.eye(n_classes)[y] * 4 + rng.normal(0, 1.3, (len(y), n_classes))
    logits[:6, 5] += 20  # six images of class 0 predicted as class 5: the top pair
    return M.classification_report(y, M.softmax(logits), CLASSES[:n_classes])


def test_top_confusions_order_and_counts():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 2, 7]])
    pairs = top_confusions(cm, ["a", "b", "c"], k=10)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("a", "b", 3), ("c", "b", 2), ("b", "a", 1)]
    assert pairs[0].share_of_true == pytest.approx(3 / 8)
    assert top_confusions(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_catalog_report_fits_120_columns_sorted_by_f1():
    rep = _report()
    assert matrix_width(rep) > WIDTH  # the classic matrix would not fit
    text = report_text(rep)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert "confusion matrix (rows" not in text and "top confusions" in text
    i = lines.index(next(line for line in lines if line.startswith("class ")))
    f1s = [float(line.split()[3]) for line in lines[i + 1 : i + 1 + 28]]
    assert f1s == sorted(f1s)
    top = next(line for line in lines if "→" in line and "count" not in line)
    assert top.split()[:4] == ["6", CLASSES[0], "→", CLASSES[5]]


def test_small_report_keeps_the_classic_matrix():
    rep = M.classification_report([0, 1, 1], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["mobile", "other"])
    assert report_text(rep) == rep.table()


def test_csv_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    rep = _report()
    rows = list(csv.reader(io.StringIO(confusion_csv(rep.confusion, CLASSES))))
    assert rows[0][0] == "true\\predicted" and rows[0][1:-1] == CLASSES and rows[0][-1] == "support"
    assert [int(v) for v in rows[1][1:-1]] == list(rep.confusion[0]) and int(rows[1][-1]) == 10
    png = plot_confusion(rep.confusion, CLASSES, tmp_path / "cm.png", title="t")
    from PIL import Image

    with Image.open(png) as im:
        assert min(im.size) > 800  # large enough to read 28 labels


def test_eval_writes_confusion_files(tmp_path):
    """edgecls eval --out writes confusion.csv (and confusion.png with matplotlib) for any model."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from models_helpers import make_tiny_checkpoint

    from edgecls.evaluation.evaluate import EvalConfig, evaluate
    from edgecls.synthetic import make_image_folder

    data = make_image_folder(tmp_path / "d", counts={"mobile": 6, "other": 8}, size=48)
    ckpt = make_tiny_checkpoint(data, tmp_path / "best.pt")
    res = evaluate(EvalConfig(model=str(ckpt), data=str(data / "val"), out=str(tmp_path / "ev"), workers=0))
    assert str(tmp_path / "ev" / "confusion.csv") in res.files
    assert (tmp_path / "ev" / "confusion.csv").read_text().startswith("true\\predicted,mobile,other,support")
    assert "confusion matrix" in res.table()  # two classes: the classic matrix
