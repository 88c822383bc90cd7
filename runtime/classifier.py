"""The Python API of the runtime: ``Classifier.load(path).predict(image) -> Prediction``.

Same behaviour as ``edgecls run``: the spec comes from the model (ONNX metadata or sidecar), images go through
the one preprocessing function, probabilities use the model's temperature, and the threshold gives ``uncertain``.

    >>> clf = Classifier.load("runs/export/model.onnx", device="cpu", threads=2)
    >>> p = clf.predict("photo.jpg")
    >>> p.label, p.confidence, p.decision
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from edgecls.runtime.backends import load_backend
from edgecls.runtime.backends.base import Backend
from edgecls.runtime.decision import Decider, Prediction
from edgecls.runtime.model_io import check_model_file, load_model_spec, model_kind
from edgecls.runtime.preprocess import as_rgb, open_rgb, preprocess_one
from edgecls.runtime.spec import ModelSpec

ImageInput = Union[str, "os.PathLike[str]", np.ndarray, Any]  # path, HxWx3 uint8 array, or PIL image


class Classifier:
    """A loaded model with its spec and decision rule. Use :meth:`load`; close it (or use ``with``) when done."""

    def __init__(self, backend: Backend, spec: ModelSpec, threshold: Optional[float] = None, topk: int = 3,
                 max_pixels: Optional[int] = None, coverage: Optional[float] = None) -> None:
        self.backend = backend
        self.spec = spec
        self.decider = Decider(spec, threshold=threshold, topk=topk, coverage=coverage)
        self.max_pixels = max_pixels  # per image read from a path or PIL image; None: the loader's default

    @classmethod
    def load(
        cls,
        path: os.PathLike[str] | str,
        device: str = "auto",
        threads: Optional[int] = None,
        allow_fallback: bool = False,
        threshold: Optional[float] = None,
        topk: int = 3,
        max_pixels: Optional[int] = None,
        coverage: Optional[float] = None,
        **backend_options: Any,
    ) -> Classifier:
        """Load an exported ``.onnx`` (with its metadata) or a TensorRT ``.engine``/``.plan`` (with its sidecar).

        Raises InputError/SpecError (exit 2) for a model without metadata or whose input disagrees with it, and
        CapabilityError (exit 4) when the requested device/provider is not there (unless ``allow_fallback``).
        ``backend_options`` go to the onnxruntime backend (``session_config``, ``trt_cache_dir``). ``max_pixels``
        bounds the pixels of an image read from a path or a PIL image (default
        :data:`~edgecls.runtime.preprocess.DEFAULT_MAX_PIXELS`; 0: no bound). ``coverage``: the conformal
        sets' coverage (default: the one the model carries); each :class:`Prediction` then has ``set`` and, with an
        OOD threshold, ``unknown``.
        """
        p = check_model_file(path)
        spec = load_model_spec(p)  # refuse a model without metadata before any (slow) session or engine load
        backend = load_backend(
            p, device=device, threads=threads, allow_fallback=allow_fallback, spec=spec, **backend_options
        )
        try:
            return cls(backend, spec, threshold=threshold, topk=topk, max_pixels=max_pixels, coverage=coverage)
        except Exception:
            backend.close()
            raise

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def classes(self):
        return self.spec.classes

    @property
    def threshold(self) -> float:
        return self.decider.threshold

    @property
    def kind(self) -> str:
        return model_kind(getattr(self.backend, "path", Path("x.onnx")))

    # -- steps (the runner calls them separately to time and overlap them) ----------------------------------
    def prepare(self, image: ImageInput, bgr: bool = False, out: Optional[np.ndarray] = None) -> np.ndarray:
        """One image → float32 CHW with the model's preprocessing. Paths and PIL images go through the one image
        loader's rules (:func:`~edgecls.runtime.preprocess.open_rgb`: upright, 8-bit RGB, bounded pixels); an
        unreadable image raises :class:`~edgecls.runtime.preprocess.ImageReadError`, never a decoder's own error."""
        if isinstance(image, (str, os.PathLike)):
            image, bgr = open_rgb(image, self.max_pixels), False  # a PIL image: fewer copies than an array
        elif isinstance(image, Image.Image):
            image, bgr = as_rgb(image, self.max_pixels), False
        return preprocess_one(image, self.spec.preprocess, bgr=bgr, out=out)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, C) for a preprocessed float32 NCHW batch."""
        return self.backend.infer(batch)

    # -- one call --------------------------------------------------------------------------------------------
    def predict(self, image: ImageInput, bgr: bool = False) -> Prediction:
        """Classify one image: a path, an HxWx3 uint8 RGB array (BGR with ``bgr=True``) or a PIL image."""
        return self.predict_batch([image], bgr=bgr)[0]

    def predict_batch(self, images: Sequence[ImageInput], bgr: bool = False) -> List[Prediction]:
        """Classify several images in one inference call."""
        images = list(images)
        if not images:
            return []
        c = self.spec.preprocess.crop
        batch = np.empty((len(images), 3, c, c), dtype=np.float32)
        for i, im in enumerate(images):
            self.prepare(im, bgr=bgr, out=batch[i])
        return self.decider.decide(self.backend.infer(batch))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Classifier({self.spec.arch}, classes={list(self.spec.classes)}, precision={self.spec.precision}, "
            f"backend={self.backend.describe()}, threshold={self.threshold})"
        )
