"""``edgecls ray``: ``edgecls run``'s records for a catalog of millions of photos, on a Ray cluster.

- ``config.py``: :class:`~edgecls.runtime.scale.config.ScaleConfig`, what the job was asked to do.
- ``inputs.py``: INPUT (a folder, a glob, or a CSV/Parquet manifest of ids and paths) → the ordered input list.
- ``shards.py``: deterministic shards of that list, each committed by an atomic rename; the merge at the end.
- ``actor.py``: the Ray Data actor that loads the ``Classifier`` once and runs ``edgecls run``'s own loop on a batch.
- ``job.py``: the driver: Ray Data's ``map_batches`` over the shards not yet committed, commits, the summary.

Ray is imported only here, inside the job (``edgecls[ray]``); the runtime-only install stays Ray-free.
"""
