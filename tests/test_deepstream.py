"""DeepStream: the nvinfer classifier config (parsed as the key file it is), labels in nvinfer's format, the model
it points at fed as nvinfer feeds it, and `edgecls eval --preprocess deepstream`."""
from __future__ import annotations

import configparser

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cli_helpers import run_cli as cli  # noqa: E402
from deploy_helpers import deployed  # noqa: E402

from edgecls.core.errors import InputError  # noqa: E402
from edgecls.export.deepstream import CONFIG_NAME, config_text, labels_line, write_deepstream  # noqa: E402


@pytest.fixture(scope="module")
def dep(tmp_path_factory, tiny_data):
    return deployed(tmp_path_factory, tiny_data)


def read_config(path):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    return cp["property"]


def test_nvinfer_config_keys(dep):
    folder = dep["deepstream"]
    p = read_config(folder / CONFIG_NAME)
    spec = dep["result"].spec
    c = spec.preprocess.crop
    assert p["network-type"] == "1" and p["process-mode"] == "1" and p["network-mode"] == "2"
    assert p["model-color-format"] == "0" and p["infer-dims"] == f"3;{c};{c}" and p["batch-size"] == "8"
    assert p["net-scale-factor"] == "1" and p["offsets"] == "0;0;0" and p["maintain-aspect-ratio"] == "0"
    from edgecls.runtime.model_io import load_model_spec

    shipped = load_model_spec(folder / "model_raw_probs.onnx")  # its threshold (re-fitted on its own outputs)
    assert float(p["classifier-threshold"]) == pytest.approx(shipped.threshold, abs=1e-6)
    assert p["output-blob-names"] == "probs" and p["onnx-file"] == "model_raw_probs.onnx"
    assert p["model-engine-file"] == "model_raw_probs.onnx_b8_gpu0_fp16.engine"
    assert p["labelfile-path"] == "labels.txt" and p["classifier-async-mode"] == "0"
    assert (folder / "labels.txt").read_text() == ";".join(spec.classes) + "\n"
    assert (folder / "model_raw_probs.onnx").is_file() and (folder / "model_raw_probs.json").is_file()


def test_model_fed_as_nvinfer_feeds_it_matches_model_onnx(dep, tiny_data):
    """nvinfer: scale the frame to the input size, y = net-scale-factor * (x - offsets) = x, NCHW RGB floats."""
    from PIL import Image

    from edgecls.core.images import list_images
    from edgecls.runtime.backends import load_backend
    from edgecls.runtime.metrics import softmax

    spec = dep["result"].spec
    c = spec.preprocess.crop
    p = read_config(dep["deepstream"] / CONFIG_NAME)
    scale, offsets = float(p["net-scale-factor"]), np.asarray([float(v) for v in p["offsets"].split(";")])
    frames = [Image.open(f).convert("RGB").resize((c, c), Image.BILINEAR) for f in list_images(tiny_data / "val")[:6]]
    x = np.stack([np.asarray(im, np.float32).transpose(2, 0, 1) for im in frames])
    ds_in = (scale * (x - offsets[None, :, None, None])).astype(np.float32)
    norm = ((x / 255.0 - np.asarray(spec.preprocess.mean)[None, :, None, None])
            / np.asarray(spec.preprocess.std)[None, :, None, None]).astype(np.float32)
    ds = load_backend(dep["deepstream"] / p["onnx-file"], device="cpu").infer(ds_in)
    ref = softmax(load_backend(dep["out"] / "model.onnx", device="cpu").infer(norm), spec.temperature)
    assert np.abs(ds - ref).max() < 1e-5
    assert np.allclose(ds.sum(1), 1.0, atol=1e-5)


def test_labels_and_refusals(dep, tmp_path):
    spec = dep["result"].spec
    from edgecls.export.variants import variant_spec

    rp = variant_spec(spec, "raw-probs")
    with pytest.raises(InputError, match="';'"):
        labels_line(rp.replace(classes=("a;b", "c"), positive=None, confidence=None))
    with pytest.raises(InputError, match="raw-probs"):
        config_text("model.onnx", spec, 8, "fp16")
    with pytest.raises(InputError, match="precision"):
        config_text("m.onnx", rp, 8, "fp64")
    low = config_text("m.onnx", rp.replace(threshold=0.3), 4, "fp32")
    assert "below 0.5" in low and "network-mode=0" in low
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_deepstream(target, dep["deepstream"] / "model_raw_probs.onnx", rp, 8)


def test_eval_preprocess_deepstream(dep, tiny_data, capsys):
    from PIL import Image

    from edgecls.core.images import list_images
    from edgecls.evaluation.data import stretched
    from edgecls.evaluation.evaluate import EvalConfig, evaluate
    from edgecls.runtime.preprocess import open_rgb, preprocess

    spec = dep["result"].spec
    c = spec.preprocess.crop
    files = list_images(tiny_data / "val")[:4]
    images = [open_rgb(f) for f in files]
    x = stretched(images, spec)
    manual = np.stack([(np.asarray(im.resize((c, c), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
                        - np.asarray(spec.preprocess.mean, np.float32)[:, None, None])
                       / np.asarray(spec.preprocess.std, np.float32)[:, None, None] for im in images])
    assert np.abs(x - manual).max() < 1e-5
    assert np.abs(x - preprocess(images, spec.preprocess)).max() > 1e-2  # the crop really is missing
    std = evaluate(EvalConfig(model=str(dep["out"] / "model.onnx"), data=str(tiny_data / "val"), device="cpu"))
    ds = evaluate(EvalConfig(model=str(dep["deepstream"] / "model_raw_probs.onnx"), data=str(tiny_data / "val"),
                             device="cpu", preprocess="deepstream"))
    assert ds.preprocess == "deepstream" and ds.to_dict()["preprocess"] == "deepstream"
    assert "no centre crop" in ds.table() and ds.report.n == std.report.n
    assert not np.allclose(ds.probs, std.probs)
    with pytest.raises(InputError, match="--preprocess"):
        EvalConfig(model="m.onnx", data=".", preprocess="opencv")
    assert cli(["eval", dep["out"] / "model.onnx", "--data", tiny_data / "val", "--no-files", "--device", "cpu",
                "--preprocess", "deepstream"]) == 0
    assert "preprocess deepstream" in capsys.readouterr().out
