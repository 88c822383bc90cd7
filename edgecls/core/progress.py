"""The one progress helper: a tqdm bar on stderr when enabled and tqdm is installed, else a silent no-op."""

from __future__ import annotations

from typing import Any, Iterable, Optional


class _NoBar:
    def __init__(self, iterable: Optional[Iterable[Any]] = None) -> None:
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(
    iterable: Optional[Iterable[Any]] = None,
    *,
    total: Optional[int] = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
):
    """A progress bar (``update``/``close``/iteration/context manager) — tqdm's, or a no-op stand-in."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return _NoBar(iterable)
