"""Inference on a remote Triton (or any KServe v2) server as a :class:`Backend`: ``triton://host:port/model``.

Preprocessing and decisions stay local (the model file given to ``edgecls run``/``serve`` supplies the spec);
each batch goes to ``POST /v2/models/<model>/infer`` through tritonclient's HTTP client (the ``triton`` extra,
imported lazily), as binary tensors. At load the server's model metadata is checked against the spec (input
name and shape, number of classes), as for a local model.

tritonclient's HTTP client is built on gevent, whose objects belong to the thread that made them, so each thread
that runs inference gets its own client.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from edgecls.core.errors import CapabilityError, InputError
from edgecls.runtime.backends.base import Backend, dims
from edgecls.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

SCHEME = "triton"
DEFAULT_PORT = 8000
TIMEOUT_S = 60.0


def is_triton_url(text: Optional[str]) -> bool:
    return bool(text) and str(text).lower().startswith(f"{SCHEME}://")


def parse_triton_url(url: str) -> Tuple[str, str, str]:
    """``triton://host[:port]/model[/version]`` → ``("host:port", model, version or "")``."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme.lower() != SCHEME or not parts.hostname or not 1 <= len(path) <= 2:
        raise InputError(f"--backend {url!r}: expected triton://HOST[:PORT]/MODEL[/VERSION] "
                         f"(e.g. triton://127.0.0.1:{DEFAULT_PORT}/mobile)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InputError(f"--backend {url!r}: the port is not a number in 1..65535") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", path[0], path[1] if len(path) == 2 else ""


def import_tritonclient():
    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise CapabilityError(
            "--backend triton://... needs tritonclient: pip install 'edgecls[triton]'"
        ) from e
    return httpclient, InferenceServerException


class TritonBackend(Backend):
    """A model on a Triton/KServe v2 server (see the module docstring)."""

    name = "triton"

    def __init__(self, url: str, spec: Optional[ModelSpec] = None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.address, self.model, self.version = parse_triton_url(url)
        self.timeout_s = float(timeout_s)
        self._http, self._error = import_tritonclient()
        self._local = threading.local()
        self.providers = (f"{SCHEME}://{self.address}/{self.model}",)
        meta = self._metadata()
        self._read_io(meta, spec)
        if spec is not None:
            self.check_spec(spec, url)
        log.info("Triton model %s at %s: input %s %s, output %s", self.model, self.address, self.input_name,
                 self._shape_str(), self.output_name)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._http.InferenceServerClient(
                url=self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _metadata(self) -> dict:
        client = self._client()
        try:
            if not client.is_server_live():
                raise CapabilityError(f"the Triton server at {self.address} is not live")
            if not client.is_model_ready(self.model, self.version):
                raise CapabilityError(f"model {self.model!r} is not ready on the Triton server at {self.address}")
            return client.get_model_metadata(self.model, self.version)
        except self._error as e:
            raise CapabilityError(f"Triton server {self.address}, model {self.model!r}: {e}") from e
        except (OSError, ConnectionError) as e:
            raise CapabilityError(f"cannot reach the Triton server at {self.address}: {e}") from e

    def _read_io(self, meta: dict, spec: Optional[ModelSpec]) -> None:
        inputs, outputs = meta.get("inputs") or [], meta.get("outputs") or []
        if len(inputs) != 1 or not outputs:
            raise InputError(f"{self.url}: expected a model with one input and an output, the server reports "
                             f"inputs {[i.get('name') for i in inputs]}, outputs {[o.get('name') for o in outputs]}")
        out = outputs[0]
        if spec is not None and len(outputs) > 1:
            out = next((o for o in outputs if o.get("name") == spec.output_name), out)
        for t in (inputs[0], out):
            if t.get("datatype") != "FP32":
                raise InputError(f"{self.url}: tensor {t.get('name')!r} is {t.get('datatype')}; edgecls sends and "
                                 "reads FP32")
        self.input_name, self.output_name = inputs[0]["name"], out["name"]
        self.input_shape = dims(inputs[0].get("shape") or ())
        self.output_shape = dims(out.get("shape") or ())
        if len(self.input_shape) == 3:  # a server listing the shape without the batch dimension
            self.input_shape = (None,) + self.input_shape
            self.output_shape = (None,) + self.output_shape

    def _run(self, batch: np.ndarray) -> np.ndarray:
        http = self._http
        inp = http.InferInput(self.input_name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32), binary_data=True)
        out = http.InferRequestedOutput(self.output_name, binary_data=True)
        try:
            res = self._client().infer(self.model, [inp], model_version=self.version, outputs=[out])
        except self._error as e:
            raise RuntimeError(f"Triton inference on {self.address}/{self.model} failed: {e}") from e
        arr = res.as_numpy(self.output_name)
        if arr is None:
            raise RuntimeError(f"Triton response from {self.address}/{self.model} has no output {self.output_name!r}")
        return arr

    def describe(self) -> str:
        return f"triton [{self.address}/{self.model}]"

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a client whose connection already dropped
                pass
            self._local.client = None


__all__ = ["TritonBackend", "is_triton_url", "parse_triton_url"]
