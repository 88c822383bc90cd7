"""The model slot: the one place that knows which model answers (see the package docstring).

Every inference goes through :meth:`ModelSlot.infer`, which returns the model that answered with its output, so a
record names exactly the model that produced it. :meth:`ModelSlot.reload` (a watcher thread, a SIGHUP, serve's
repository API) loads the new model on the calling thread, warms and checks it, and swaps it in under a lock: the
next call takes it, calls in flight finish on the old one, which is closed when the last of them returns. The new
model's first ``probation`` calls are watched: an exception or a non-finite output brings the previous model back
(it stays loaded until then) and the failed batch is run again on it, so no frame is lost.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.model_io import check_model_file
from edgecls.runtime.slot.checks import GoldenSet, Refusal, bad_output, check_compatible, warm_up
from edgecls.runtime.slot.identity import ModelIdentity, identify, resolve_model
from edgecls.runtime.slot.loaded import Event, Loaded, ReloadResult, SlotEmpty, close_model

log = logging.getLogger(__name__)

PROBATION_CALLS = 8  # a new model's first calls are checked (finite, right shape); a failure rolls back
HISTORY = 50  # swaps, refusals and rollbacks kept for the summary and the views


class ModelSlot:
    """The current model and how it is replaced; see the module docstring.

    ``loader(path) -> Classifier`` loads a model file (the same options as the first load). ``path`` is the model
    file or a model folder (``<name>/<version>/model.onnx``: the newest version). ``name`` overrides the model's
    name (serve: the URL's). ``golden``: a :class:`GoldenSet` each new model must pass.
    """

    def __init__(self, loader: Callable[[Path], Any], path: os.PathLike | str, *, name: Optional[str] = None,
                 allow_new_classes: bool = False, golden: Optional[GoldenSet] = None,
                 probation: int = PROBATION_CALLS, warm_batch: int = 1) -> None:
        self.loader = loader
        self.path = Path(path)
        self.name = name
        self.allow_new_classes = allow_new_classes
        self.golden = golden
        self.probation = probation
        self.warm_batch = warm_batch
        self._lock = threading.Lock()  # current/previous and the in-flight counts
        self._reload_lock = threading.Lock()  # one load at a time
        self.current: Optional[Loaded] = None
        self.previous: Optional[Loaded] = None  # kept loaded while the current one is on probation
        self.reference: Optional[Loaded] = None  # the last model (after an unload: what a new one is checked against)
        self.loads = 0
        self.swaps = 0
        self.refusals: Counter = Counter()
        self.rollbacks: Counter = Counter()
        self.events: Deque[Event] = deque(maxlen=HISTORY)
        self._refused: Dict[str, Refusal] = {}  # sha256 -> why (not retried until the file or the model changes)
        self.on_change: List[Callable[[ModelIdentity], None]] = []

    # -- the first model ---------------------------------------------------------------------------------------
    @classmethod
    def around(cls, clf: Any, identity: Optional[ModelIdentity] = None, **kw: Any) -> ModelSlot:
        """A slot holding an already loaded classifier (tests, the Python API; not closed by the slot)."""
        path = getattr(clf.backend, "path", None) or "model"
        if identity is None:
            sha = ""
            if path and Path(path).is_file():
                from edgecls.core.fileio import file_sha256

                sha = file_sha256(path)
            identity = ModelIdentity(kw.get("name") or Path(path).stem, "1", sha, os.fspath(path))
        slot = cls(lambda p: (_ for _ in ()).throw(InputError("this model was handed in; it cannot be reloaded")),
                   path, **kw)
        slot._install(Loaded(clf, identity, owned=False))
        return slot

    def start(self) -> ModelIdentity:
        """Load the first model (errors propagate: a bad model fails the command at once)."""
        loaded = self._load(None)
        if self.golden is not None:
            self.golden.check_labels(loaded.clf)
        self._install(loaded)
        return loaded.identity

    def _install(self, loaded: Loaded) -> None:
        with self._lock:
            self.current = self.reference = loaded
            self.loads += 1

    def _load(self, version: Optional[str]) -> Loaded:
        """Resolve, hash and load the model file; the file must not change while it is read (else read again)."""
        for _ in range(3):
            file, name, ver = resolve_model(self.path, version)
            check_model_file(file)
            before = _stat(file)
            with ThreadPoolExecutor(1, thread_name_prefix="edgecls-sha256") as ex:  # hashed while it loads
                ident = ex.submit(identify, file, self.name or name, ver or str(self.loads + 1))
                clf = self.loader(file)
                identity = ident.result()
            if _stat(file) == before:
                return Loaded(clf, identity)
            clf.close()  # replaced while being read: hash and load the new file
            log.info("model file %s changed while it was loaded; loading it again", file)
        raise InputError(f"model file {self.path} keeps changing; write it aside and rename it over the old one")

    # -- the model that answers ----------------------------------------------------------------------------------
    @property
    def loaded(self) -> Loaded:
        cur = self.current
        if cur is None:
            raise SlotEmpty(f"no model is loaded ({self.path} was unloaded)")
        return cur

    @property
    def identity(self) -> ModelIdentity:
        return self.loaded.identity

    @property
    def clf(self) -> Any:
        return self.loaded.clf

    # the Classifier calls the loops make besides inference: preprocessing is the same for every model a swap
    # accepts (checks.check_compatible), so the current model's serves
    @property
    def spec(self) -> Any:
        return self.loaded.clf.spec

    @property
    def decider(self) -> Any:
        return self.loaded.clf.decider

    @property
    def backend(self) -> Any:
        return self.loaded.clf.backend

    def prepare(self, *args: Any, **kw: Any) -> np.ndarray:
        return self.loaded.clf.prepare(*args, **kw)

    def acquire(self) -> Loaded:
        with self._lock:
            cur = self.loaded
            cur.inflight += 1
            return cur

    def release(self, m: Loaded) -> None:
        with self._lock:
            m.inflight -= 1
            close = m.retired and m.inflight == 0 and not m.closed
            if close:
                m.closed = True
        if close:
            close_model(m)

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, Loaded]:
        """The output for ``batch`` and the model that produced it (see the module docstring for probation)."""
        m = self.acquire()
        watched = m.probation > 0
        err: Optional[BaseException] = None
        out: Any = None
        why: Optional[str] = None
        try:
            out = m.clf.infer(batch)
            if watched:
                why = bad_output(out, len(batch), m.clf.spec.num_classes)
        except Exception as e:
            if not watched:
                raise
            err, why = e, f"{type(e).__name__}: {e}"
        finally:
            self.release(m)
        if watched:
            if why is None:
                self._passed(m)
            elif self._rollback(m, why):
                return self.infer(batch)  # the batch again, on the model brought back
            elif err is not None:
                raise err
        return out, m

    def _passed(self, m: Loaded) -> None:
        with self._lock:
            m.probation -= 1
            prev = self.previous if m.probation <= 0 and self.current is m else None
            if prev is not None:
                self.previous = None
                self._retire(prev)

    def _rollback(self, m: Loaded, why: str) -> bool:
        """Bring the previous model back after ``m`` failed on its first inputs (True: retry the batch)."""
        with self._lock:
            if self.current is not m or self.previous is None:
                return self.current is not m and self.current is not None  # already rolled back by another call
            prev, self.previous = self.previous, None
            self.current = self.reference = prev
            m.probation = 0
            self._refused[m.identity.sha256] = Refusal("first_inputs", why)
            self.rollbacks["first_inputs"] += 1
            self._retire(m)
        text = f"model {m.identity} failed on its first inputs ({why}); rolled back to {prev.identity}"
        log.error("%s", text)
        self.events.append(Event(time.time(), "rollback", text))
        self._notify(prev.identity)
        return True

    def _retire(self, m: Loaded) -> None:
        """(under the lock) ``m`` takes no new calls; closed now if idle, else by its last call's release."""
        m.retired = True
        if m.inflight == 0 and not m.closed:
            m.closed = True
            threading.Thread(target=close_model, args=(m,), daemon=True, name="edgecls-slot-close").start()

    # -- replacing it ----------------------------------------------------------------------------------------------
    def reload(self, trigger: str, version: Optional[str] = None) -> ReloadResult:
        """Load, warm and check the model at the slot's path (or ``version`` of a model folder) and swap it in;
        a refused model is closed and the current one goes on. Runs on the calling thread."""
        with self._reload_lock:
            t0 = time.perf_counter()
            try:
                file, _, _ = resolve_model(self.path, version)
                from edgecls.core.fileio import file_sha256

                sha = file_sha256(file)
            except (InputError, OSError) as e:
                return self._refuse(Refusal("load", str(e)), trigger, None, t0)
            cur = self.current
            if cur is not None and cur.identity.sha256 == sha and (version is None or version == cur.identity.version):
                log.info("%s: model %s unchanged (sha256 %s); nothing to swap", trigger, cur.identity, sha[:12])
                return ReloadResult("unchanged", cur.identity, None, time.perf_counter() - t0)
            if sha in self._refused:
                r = self._refused[sha]
                log.info("%s: %s was refused before (%s); the current model goes on", trigger, file, r)
                return ReloadResult("refused", None, r, time.perf_counter() - t0)
            try:
                new = self._load(version)
            except Exception as e:
                return self._refuse(Refusal("load", f"{type(e).__name__}: {e}"), trigger, sha, t0)
            refusal = self._check(new)
            if refusal is not None:
                close_model(new)
                return self._refuse(refusal, trigger, new.identity.sha256, t0)
            self._swap(new, trigger)
            return ReloadResult("swapped", new.identity, None, time.perf_counter() - t0)

    def _check(self, new: Loaded) -> Optional[Refusal]:
        ref = self.reference
        if ref is not None:
            r = check_compatible(ref.clf, new.clf, self.allow_new_classes)
            if r is not None:
                return r
        r = warm_up(new.clf, self.warm_batch)
        if r is not None:
            return r
        cur = self.current
        if self.golden is not None:
            if cur is None:
                log.warning("golden set not compared: no model is loaded to compare %s with", new.identity)
                return None
            try:
                refusal, line = self.golden.compare(cur.clf, cur.identity.sha256, new.clf, new.identity.sha256)
            except Exception as e:
                return Refusal("golden", f"the golden set could not be run: {type(e).__name__}: {e}")
            log.info("%s", line)
            return refusal
        return None

    def _swap(self, new: Loaded, trigger: str) -> None:
        new.probation = self.probation
        with self._lock:
            old = self.current
            if self.previous is not None:  # a swap while the last one is still on probation
                self._retire(self.previous)
            self.previous = old
            self.current = self.reference = new
            self.loads += 1
            self.swaps += 1
            self._refused.clear()  # a golden comparison is against the current model: worth trying again
            if old is not None and self.probation <= 0:
                self.previous = None
                self._retire(old)
        text = f"model swapped ({trigger}): {old.identity if old else 'none'} -> {new.identity}"
        log.info("%s", text)
        self.events.append(Event(time.time(), "swap", text))
        self._notify(new.identity)

    def _refuse(self, r: Refusal, trigger: str, sha: Optional[str], t0: float) -> ReloadResult:
        if sha is not None:
            self._refused[sha] = r
        self.refusals[r.reason] += 1
        cur = self.current
        going = f"the current model ({cur.identity})" if cur is not None else "no model"
        text = f"new model refused ({trigger}), {r}; {going} goes on"
        log.warning("%s", text)
        self.events.append(Event(time.time(), "refusal", text))
        return ReloadResult("refused", None, r, time.perf_counter() - t0)

    def unload(self) -> Optional[ModelIdentity]:
        """No model answers until the next reload (serve's repository API); the current one is closed once idle."""
        with self._reload_lock, self._lock:
            cur, self.current = self.current, None
            for m in (cur, self.previous):
                if m is not None:
                    self._retire(m)
            self.previous = None
        if cur is not None:
            self.events.append(Event(time.time(), "unload", f"model unloaded: {cur.identity}"))
            log.info("model unloaded: %s", cur.identity)
        return cur.identity if cur else None

    def _notify(self, identity: ModelIdentity) -> None:
        for fn in list(self.on_change):
            try:
                fn(identity)
            except Exception:  # a view or metric hook never stops a swap
                log.exception("model-change hook failed")

    def summary_lines(self) -> List[str]:
        """For the run summary: the swaps, refusals and rollbacks (when there were any)."""
        if not (self.swaps or self.refusals or self.rollbacks):
            return []
        lines = [f"model: {self.swaps} swap(s), {sum(self.refusals.values())} refused, "
                 f"{sum(self.rollbacks.values())} rolled back; now {self.current.identity if self.current else 'none'}"]
        return lines + [e.text for e in self.events if e.kind != "swap"][:5]

    def close(self) -> None:
        """Close the models (those with calls still in flight when their last call returns)."""
        with self._reload_lock, self._lock:
            ms = [m for m in (self.current, self.previous) if m is not None]
            self.current = self.previous = None
            idle = []
            for m in ms:
                m.retired = True
                if m.inflight == 0 and not m.closed:
                    m.closed = True
                    idle.append(m)
        for m in idle:
            close_model(m)


def _stat(path: Path) -> Tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
