"""Triton's model-repository extension, as tritonclient calls it (``get_model_repository_index``, ``load_model``,
``unload_model``), over the model slot of ``edgecls serve``.

- ``POST /v2/repository/index`` (body ``{"ready": true}`` optional): each version of the served model —
  ``{"name", "version", "state": "READY" | "UNAVAILABLE", "reason"}``; a model folder (``<repo>/<name>/``) lists
  every version folder, a model file its one loaded version.
- ``POST /v2/repository/models/<name>/load``: load the model file again (a model folder: its newest version),
  warm and check it, and swap it in between two batches; 200 when it answers (swapped, or unchanged), 400 with
  the reason when it was refused (the current model goes on). Triton's ``config`` and file overrides are refused:
  the model comes from the repository on disk.
- ``POST /v2/repository/models/<name>/unload``: no model answers (inference: 503) until the next ``load``.
"""
import asyncio
import json
import logging
from typing import Any, Dict, List

from edgecls.runtime.serve import kserve
from edgecls.runtime.serve.uploads import Lease, UploadError, read_body

log = logging.getLogger(__name__)

MAX_CONTROL_BYTES = 64 * 1024  # a control request is a small JSON object


async def _json_body(request: Any, state: Any) -> Dict[str, Any]:
    with Lease(state.budget) as lease:
        body = bytes(await read_body(request, MAX_CONTROL_BYTES, lease))
    if not body.strip():
        return {}
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise UploadError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UploadError(400, "the request body must be a JSON object")
    return obj


def index(state: Any, ready_only: bool) -> List[Dict[str, str]]:
    from pathlib import Path

    from edgecls.runtime.slot.identity import versions_of

    slot, name = state.slot, state.cfg.model_name
    cur = slot.current
    loaded = cur.identity.version if cur is not None else None
    folder = Path(slot.path)
    versions = [str(v) for v, _ in versions_of(folder)] if folder.is_dir() else ([loaded] if loaded else ["1"])
    rows = []
    for v in versions:
        if v == loaded:
            rows.append({"name": name, "version": v, "state": "READY", "reason": ""})
        elif not ready_only:
            rows.append({"name": name, "version": v, "state": "UNAVAILABLE",
                         "reason": "unloaded" if cur is None else "not the loaded version (the newest is loaded)"})
    return rows


def add_repository_routes(app: Any, state: Any, resp: Any) -> None:
    from fastapi import Request

    def check(name: str) -> None:
        if name != state.cfg.model_name:
            raise UploadError(404, f"unknown model {kserve.short(name)}; this server's repository holds "
                                   f"{state.cfg.model_name!r}")

    @app.post("/v2/repository/index")
    async def repository_index(request: Request):
        async def work():
            obj = await _json_body(request, state)
            ready = obj.get("ready", False)
            if not isinstance(ready, bool):
                raise UploadError(400, f"\"ready\" must be true or false, got {kserve.short(ready)}")
            return resp.reply("/v2/repository/index", 200, index(state, ready))

        return await resp.guarded("/v2/repository/index", work)

    @app.post("/v2/repository/models/{name}/load")
    async def load(name: str, request: Request):
        async def work():
            check(name)
            obj = await _json_body(request, state)
            params = obj.get("parameters") or {}
            if not isinstance(params, dict):
                raise UploadError(400, "\"parameters\" must be a JSON object")
            extra = sorted(k for k in params if k == "config" or k.startswith("file:"))
            if extra:
                raise UploadError(400, f"load parameters {extra} are not supported: edgecls serve loads the model "
                                       "from its repository on disk (write the new version there, then load)")
            res = await asyncio.get_running_loop().run_in_executor(None, state.slot.reload, "repository load")
            if res.status == "refused":
                raise UploadError(400, f"failed to load {name!r}: refused, {res.refusal}; the current model goes on")
            return resp.reply("/v2/repository/models/load", 200, {"model": res.identity.to_dict(),
                                                                  "status": res.status})

        return await resp.guarded("/v2/repository/models/load", work)

    @app.post("/v2/repository/models/{name}/unload")
    async def unload(name: str, request: Request):
        async def work():
            check(name)
            await _json_body(request, state)  # unload_dependents: this repository has no ensembles
            gone = state.slot.unload()
            return resp.reply("/v2/repository/models/unload", 200, {"unloaded": gone.to_dict() if gone else None})

        return await resp.guarded("/v2/repository/models/unload", work)
