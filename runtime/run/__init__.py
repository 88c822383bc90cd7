"""``edgecls run``: the loop that classifies frames from sources and reports every one.

- ``config.py``: :class:`~edgecls.runtime.run.config.RunConfig`, everything the run was asked to do.
- ``loop.py``: :func:`~edgecls.runtime.run.loop.run`, sources → decode → preprocess → infer → decide → output.
- ``records.py`` + ``writers.py``: one record per frame, written as JSON lines, CSV or a table.
- ``annotate.py``, ``output.py``, ``saver.py``, ``viewer.py``: the overlay, and ``--save`` / ``--show``.
- ``stats.py``: :class:`~edgecls.runtime.run.stats.RunStats`, the summary and its JSON.
"""
