"""Live sources added and removed while ``edgecls run`` runs: the view's HTTP endpoint and ``--sources-file``.

A sources file holds one live source a line: ``[id=NAME] [fps=N] SOURCE`` (``#`` starts a comment line). ``id``
names the source in records, metrics and the view (default: the source as written, credentials hidden); ``fps``
caps how many of its frames per second are classified. The file is re-read when it changes: sources no longer in
it stop, new ones start, a changed line restarts its source. A line that cannot be used (a bad source, an id given
twice, a camera that does not open) is logged and noted in the summary; the other sources go on.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgecls.core.errors import InputError, SourceError

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the sources file's modification time and size are checked
_OPTION = re.compile(r"^(id|fps)=(\S+)$")


@dataclass(frozen=True)
class SourceSpec:
    """One live source to run: what to open, its id (None: the source as written) and its fps cap."""

    source: str
    id: Optional[str] = None
    fps: Optional[float] = None


def parse_spec(source: str, id: Optional[str] = None, fps: Any = None, where: str = "source") -> SourceSpec:
    """A validated :class:`SourceSpec` (InputError naming ``where`` and what is valid)."""
    text = str(source or "").strip()
    if not text:
        raise InputError(f"{where}: no source given (a camera or stream: rtsp://…, csi://N, /dev/videoN, a video with "
                         "--realtime)")
    if id is not None and not re.fullmatch(r"[\w.:@/-]{1,100}", str(id)):
        raise InputError(f"{where}: id {id!r} must be 1 to 100 letters, digits or . _ - : @ /")
    cap = None
    if fps is not None:
        try:
            cap = float(fps)
        except (TypeError, ValueError):
            cap = -1.0
        if not cap > 0 or cap != cap or cap == float("inf"):
            raise InputError(f"{where}: fps {fps!r} must be a number of frames per second > 0")
    return SourceSpec(text, None if id is None else str(id), cap)


def parse_line(line: str, where: str) -> Optional[SourceSpec]:
    """One line of a sources file → a spec (None for a blank or ``#`` comment line)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    tokens = text.split()
    opts: Dict[str, str] = {}
    while tokens and _OPTION.match(tokens[0]):
        key, value = _OPTION.match(tokens[0]).groups()  # type: ignore[union-attr]
        if key in opts:
            raise InputError(f"{where}: {key}= given twice")
        opts[key] = value
        tokens.pop(0)
    return parse_spec(text.split(None, len(opts))[-1] if tokens else "", opts.get("id"), opts.get("fps"), where)


def read_sources_file(path: Path) -> List[SourceSpec]:
    """Every source of a sources file (InputError: unreadable, a bad line, an id given twice)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--sources-file {path}: cannot read it: {e}") from e
    specs: List[SourceSpec] = []
    for i, line in enumerate(lines, start=1):
        spec = parse_line(line, f"--sources-file {path} line {i}")
        if spec is not None:
            specs.append(spec)
    return specs


def make_source(spec: SourceSpec, options: Any) -> Any:
    """An unstarted live source for ``spec`` (InputError when it is not a live source)."""
    from edgecls.runtime.sources.parse import parse_source

    src = parse_source(spec.source, options)
    if isinstance(src, list) or not getattr(src, "live", False):
        raise InputError(f"source {spec.source!r} is not a live source: only cameras and streams (and video files "
                         "with --realtime) can be added while running")
    if spec.id:
        src.name = spec.id
    if spec.fps or getattr(options, "fps_cap", None):
        src.fps_cap = spec.fps or options.fps_cap
    return src


class SourceControl:
    """Adds and removes the live sources of a running loop (its :class:`~.scheduler.LiveScheduler`), on request
    (:meth:`add`, :meth:`remove`: the HTTP endpoint) and from ``--sources-file`` (a watcher thread)."""

    def __init__(self, config: Any, stats: Any) -> None:
        self.options = config.source_options()
        self.path = Path(config.sources_file) if config.sources_file else None
        self.stats = stats
        self.loop: Any = None  # the run loop, once made (its scheduler runs the live sources)
        self.from_file: Dict[str, SourceSpec] = {}  # id -> spec of the sources the file started
        self._lock = threading.Lock()  # one change at a time
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self.path is not None:
            read_sources_file(self.path)  # a bad file fails the run at start (exit 2), later ones are logged

    @property
    def scheduler(self) -> Any:
        sched = getattr(self.loop, "scheduler", None)
        return sched if sched is not None and sched.running else None

    def _need_scheduler(self) -> Any:
        sched = self.scheduler
        if sched is None:
            raise SourceError("no live sources are running now (they start after the files and videos given "
                              "before them); try again then")
        return sched

    def add(self, spec: SourceSpec) -> str:
        """Open and start ``spec``'s source and schedule it; its id. InputError (bad, duplicate id) or SourceError
        (it does not open within --open-timeout)."""
        with self._lock:
            sched = self._need_scheduler()
            src = make_source(spec, self.options)
            if src.name in sched.names():
                raise InputError(f"source id {src.name!r} is already running; remove it first or give another id")
            src.start()
            try:
                sched.add(src)
            except Exception:
                src.close()
                raise
            return src.name

    def remove(self, name: str) -> bool:
        with self._lock:
            sched = self._need_scheduler()
            self.from_file.pop(name, None)
            return sched.remove(name)

    def sources(self) -> List[Dict[str, Any]]:
        sched = self.scheduler
        running = set(sched.names()) if sched is not None else set()
        out = []
        for st in list(self.stats.per_source.values()):
            d = st.to_dict(self.stats.decision_names)
            d["running"] = st.name in running
            out.append(d)
        return out

    # -- the sources file ------------------------------------------------------------------------------------
    def start(self, loop: Any) -> None:
        self.loop = loop
        if self.path is not None:
            self._thread = threading.Thread(target=self._watch, name="edgecls-sources-file", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        seen = None
        while not self._stop.is_set():
            if self.scheduler is not None:
                try:
                    st = os.stat(self.path)
                    now = (st.st_mtime_ns, st.st_size)
                except OSError as e:
                    now = None
                    if seen is not None:
                        log.warning("--sources-file %s: %s (sources keep running as they are)", self.path, e)
                if now is not None and now != seen:
                    self.sync()
                seen = now if now is not None else seen
            self._stop.wait(POLL_S)

    def _note(self, msg: str) -> None:
        log.warning(msg)
        self.stats.notes.append(msg)

    def sync(self) -> None:
        """Make the running sources match the file (those it started; sources of the command line stay)."""
        try:
            specs = read_sources_file(self.path)
        except InputError as e:
            self._note(f"{e} (sources keep running as they are)")
            return
        wanted: Dict[str, SourceSpec] = {}
        for spec in specs:
            try:
                key = spec.id or make_source(spec, self.options).name
            except (InputError, SourceError) as e:
                self._note(f"--sources-file {self.path}: {e}")
                continue
            if key in wanted:
                self._note(f"--sources-file {self.path}: source id {key!r} is given twice; the first line is used")
                continue
            wanted[key] = spec
        for key, spec in list(self.from_file.items()):
            if wanted.get(key) != spec:
                self.remove(key)
        for key, spec in wanted.items():
            if key in self.from_file:
                continue
            try:
                self.add(spec)
                self.from_file[key] = spec
            except Exception as e:  # a bad line or a camera that does not open: the others go on
                self._note(f"--sources-file {self.path}: {key}: {e}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
