"""``edgecls serve MODEL``: the runtime behind HTTP (FastAPI + uvicorn, the optional ``serve`` extra); no torch.

- ``config.py``: :class:`~edgecls.runtime.serve.config.ServeConfig`, what the server was asked to do.
- ``app.py``: :func:`~edgecls.runtime.serve.app.create_app`, the FastAPI app: ``POST /predict`` (image bytes or
  multipart → the record ``edgecls run`` prints), KServe v2 (health, metadata, infer), ``/metrics``.
- ``batching.py``: :class:`~edgecls.runtime.serve.batching.MicroBatcher`, concurrent requests share inference calls.
- ``uploads.py``: reading and decoding uploads within ``--max-bytes`` / ``--max-pixels`` (4xx, never a crash).
- ``kserve.py``: the KServe v2 / Open Inference Protocol JSON (and Triton's binary tensor extension).
- ``metrics.py``: the Prometheus registry of one app (no global registry).
- ``cli.py``: the ``edgecls serve`` command (uvicorn; SIGTERM lets in-flight requests and batches finish).
"""
