"""The calibration cache: ranges saved as JSON, keyed by model hash + image-set hash + preprocessing + method +
options, and :func:`calibrate` (reuse the cached ranges, else measure them and save them atomically)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

from edgecls.export.calib_ranges import (
    CalibConfig,
    CalibrationImages,
    compute_ranges_multi,
    tensors_to_calibrate,
)
from edgecls.runtime.spec import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
CACHE_FORMAT = "edgecls.calib/1"


def model_sha256(model: onnx.ModelProto) -> str:
    """Hash of the graph (weights included), not of metadata: the same network gives the same hash."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def cache_key(model_hash: str, images_hash: str, preprocess: PreprocessSpec, config: CalibConfig) -> str:
    blob = json.dumps(
        {"format": CACHE_FORMAT, "model": model_hash, "images": images_hash, "method": config.method,
         "options": config.options(), "preprocess": preprocess.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_file(cache_dir: PathLike, method: str, key: str) -> Path:
    return Path(cache_dir) / f"calib-{method}-{key[:16]}.json"


def load_cache(path: Path, key: str, names: Sequence[str]) -> Optional[Dict[str, Tuple[float, float]]]:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != CACHE_FORMAT or d.get("key") != key:
            log.warning("calibration cache %s does not match (format/key); recomputing", path)
            return None
        ranges = {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("calibration cache %s is unreadable (%s); recomputing", path, e)
        return None
    if set(ranges) != set(names):
        log.warning("calibration cache %s covers other tensors than the model; recomputing", path)
        return None
    return ranges


def save_cache(path: Path, key: str, ranges: Dict[str, Tuple[float, float]], meta: Dict[str, object]) -> None:
    from edgecls.core import fileio as atomic

    atomic.write_json(path, {"format": CACHE_FORMAT, "key": key, **meta,
                             "ranges": {k: [float(a), float(b)] for k, (a, b) in sorted(ranges.items())}})


@dataclass(frozen=True)
class Calibration:
    ranges: Dict[str, Tuple[float, float]]
    method: str
    cache_path: Path
    cache_hit: bool
    images: int
    images_sha256: str
    model_sha256: str


def calibrate(
    model: onnx.ModelProto, images: CalibrationImages, config: CalibConfig, cache_dir: PathLike,
    progress: Optional[Callable[[int], None]] = None,
) -> Calibration:
    """Ranges from the cache when model, image set, preprocessing, method and options are unchanged; else
    measured and saved (atomically)."""
    return calibrate_many(model, images, [config], cache_dir, progress)[config.method]


def passes_needed(configs: Sequence[CalibConfig]) -> int:
    return 2 if any(c.method != "minmax" for c in configs) else 1


def calibrate_many(
    model: onnx.ModelProto, images: CalibrationImages, configs: Sequence[CalibConfig], cache_dir: PathLike,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Calibration]:
    """:func:`calibrate` for several methods: the cached ones are reused, the others measured in one go (the same
    two passes over the images serve every method) and each saved in its own cache file."""
    mh, ih = model_sha256(model), images.sha256
    names = tensors_to_calibrate(model)
    out: Dict[str, Calibration] = {}
    missing: List[Tuple[CalibConfig, str, Path]] = []
    for config in configs:
        key = cache_key(mh, ih, images.spec, config)
        path = cache_file(cache_dir, config.method, key)
        ranges = load_cache(path, key, names)
        if ranges is not None:
            log.info("calibration (%s): reusing cached ranges %s", config.method, path)
            out[config.method] = Calibration(ranges, config.method, path, True, len(images), ih, mh)
        else:
            missing.append((config, key, path))
    if missing:
        log.info("calibration (%s) on %d images ...", ", ".join(c.method for c, _, _ in missing), len(images))
        measured = compute_ranges_multi(model, images, [c for c, _, _ in missing], progress)
        for config, key, path in missing:
            ranges = measured[config.method]
            save_cache(path, key, ranges, {"method": config.method, "options": config.options(),
                                           "model_sha256": mh, "images_sha256": ih, "images": len(images)})
            out[config.method] = Calibration(ranges, config.method, path, False, len(images), ih, mh)
    return {c.method: out[c.method] for c in configs}
