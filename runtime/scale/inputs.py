"""INPUT → the ordered list of photos a job classifies: a folder, a glob, or a manifest (CSV/Parquet of ids and
paths/URIs, the form a catalog export takes); a folder or a manifest's paths may be URIs (s3://, gs://, file://)
that pyarrow's filesystems read.

A folder or a glob lists exactly the files ``edgecls run`` lists for it, in its order, so each record's ``source``,
``index`` and ``path`` are the ones ``edgecls run INPUT`` writes. A manifest keeps its row order.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from edgecls.core.errors import InputError
from edgecls.core.images import IMAGE_EXTENSIONS, is_image_file

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
ID_COLUMNS = ("id",)
PATH_COLUMNS = ("path", "uri", "url")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str) -> bool:
    """``scheme://...`` (s3://, gs://, file://): read through a pyarrow filesystem, not as a local path."""
    return _SCHEME.match(text) is not None


@dataclass(frozen=True)
class Inputs:
    """The photos of one job, in order: ``ids[i]`` names ``paths[i]``; ``source`` is INPUT as given."""

    source: str
    ids: Tuple[str, ...]
    paths: Tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """sha256 of the ordered (id, path) list: a rerun on other inputs must not mix with committed shards."""
        h = hashlib.sha256(self.source.encode())
        for i, p in zip(self.ids, self.paths):
            h.update(b"\0" + i.encode() + b"\1" + p.encode())
        return h.hexdigest()


def list_inputs(text: str) -> Inputs:
    """INPUT → :class:`Inputs`; an InputError (exit 2) says what was wrong and what is valid."""
    text = str(text)
    if Path(text).suffix.lower() in MANIFEST_SUFFIXES and (is_uri(text) or Path(text).is_file()):
        return _manifest(text)
    if is_uri(text):
        return _uri_folder(text)
    from edgecls.runtime.sources.files import ImageSource
    from edgecls.runtime.sources.parse import parse_source

    src = parse_source(text)  # the same listing as `edgecls run INPUT` (sorted, recursive, same errors)
    if not isinstance(src, ImageSource):
        raise InputError(f"INPUT {text!r} is not a folder, a glob of images or a manifest (.csv/.parquet with "
                         f"columns {ID_COLUMNS[0]!r} and {PATH_COLUMNS[0]!r}); videos and cameras are `edgecls run`'s")
    paths = [os.fspath(p) for p, _ in src.items]
    folder = Path(text)
    if folder.is_dir():
        ids = [Path(p).relative_to(folder).as_posix() for p, _ in src.items]
    else:
        ids = list(paths)
    return Inputs(text, tuple(ids), tuple(paths))


def _pick(columns: Sequence[str], wanted: Sequence[str], what: str, where: str) -> str:
    for c in wanted:
        if c in columns:
            return c
    raise InputError(f"manifest {where} has no {what} column (looked for {', '.join(wanted)}; it has "
                     f"{', '.join(map(str, columns)) or 'none'})")


def _manifest(text: str) -> Inputs:
    rows = _read_table(text)
    if not rows:
        raise InputError(f"manifest {text!r} has no rows")
    cols = list(rows[0])
    id_col = _pick(cols, ID_COLUMNS, "id", repr(text))
    path_col = _pick(cols, PATH_COLUMNS, "path", repr(text))
    base = text.rsplit("/", 1)[0] if is_uri(text) else os.fspath(Path(text).resolve().parent)
    ids, paths, seen = [], [], set()
    for n, r in enumerate(rows, start=1):
        i, p = r.get(id_col), r.get(path_col)
        if i is None or p is None or str(i) == "" or str(p) == "":
            raise InputError(f"manifest {text!r}, row {n}: an empty {id_col!r} or {path_col!r}")
        i, p = str(i), str(p)
        if i in seen:
            raise InputError(f"manifest {text!r}, row {n}: id {i!r} appears twice (ids must be unique)")
        seen.add(i)
        if not is_uri(p) and not os.path.isabs(p):  # relative to the manifest, wherever the job runs
            p = f"{base}/{p}" if is_uri(base) else os.path.join(base, p)
        ids.append(i)
        paths.append(p)
    return Inputs(text, tuple(ids), tuple(paths))


def _read_table(text: str) -> List[dict]:
    filesystem, inner = filesystem_of(text) if is_uri(text) else (None, text)
    if Path(text).suffix.lower() == ".csv":
        try:
            if filesystem is not None:
                with filesystem.open_input_stream(inner) as f:
                    lines = f.read().decode("utf-8").splitlines()
            else:
                with open(text, newline="", encoding="utf-8") as f:
                    lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"manifest {text!r} cannot be read as UTF-8 CSV: {e}") from e
        return list(csv.DictReader(lines))
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(inner, filesystem=filesystem)
    except Exception as e:
        raise InputError(f"manifest {text!r} is not a readable Parquet file: {e}") from e
    return table.to_pylist()


def filesystem_of(uri: str):
    """``(pyarrow filesystem, path in it)`` for a URI (credentials: the usual AWS/GCP environment)."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as e:
        raise InputError(f"cannot open {uri!r}: {e} (valid: s3://, gs://, hdfs://, file:// URIs pyarrow reads)") from e


def _uri_folder(text: str) -> Inputs:
    """Every image under a URI prefix, recursively, sorted by path (what a folder gives locally)."""
    from pyarrow import fs

    filesystem, root = filesystem_of(text)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    except Exception as e:
        raise InputError(f"cannot list {text!r}: {e}") from e
    scheme = text.split("://", 1)[0]
    root = root.rstrip("/")
    rel = sorted(i.path[len(root):].lstrip("/") for i in infos if i.type == fs.FileType.File and is_image_file(i.path))
    if not rel:
        raise InputError(f"{text!r} holds no images (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return Inputs(text, tuple(rel), tuple(f"{scheme}://{root}/{r}" for r in rel))
