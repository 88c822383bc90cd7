"""One export of the tiny checkpoint with every deployment output (variants, Triton repository, DeepStream folder),
made once per test session and shared by test_variants.py, test_triton.py and test_deepstream.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

_CACHE: Dict[str, Any] = {}


def deployed(tmp_path_factory, tiny_data) -> Dict[str, Any]:
    """``{"ckpt", "out", "triton", "deepstream", "result"}`` of ``edgecls export`` with --variants probs,raw
    (raw-probs comes with --deepstream, probs with --triton)."""
    if "out" in _CACHE:
        return _CACHE
    from models_helpers import make_tiny_checkpoint

    from edgecls.export.deploy import DeployConfig
    from edgecls.export.pipeline import ExportConfig, export_checkpoint

    root = Path(tmp_path_factory.mktemp("deploy"))
    ckpt = make_tiny_checkpoint(tiny_data, root / "best.pt", head="centred")
    cfg = ExportConfig(checkpoint=ckpt, out=root / "export", threads=1,
                       deploy=DeployConfig(variants=("probs", "raw"), triton=root / "repo", triton_name="tiny",
                                           deepstream=root / "ds"))
    result = export_checkpoint(cfg)
    _CACHE.update(ckpt=ckpt, out=root / "export", triton=root / "repo", deepstream=root / "ds", result=result)
    return _CACHE
