"""Work done ahead of the model, in order: files and videos are decoded and preprocessed on a pool while the
model runs."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def ordered_prefetch(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], lookahead: int
) -> Iterator[Any]:
    """``map(fn, items)`` on ``pool``, in order, with at most ``lookahead`` items in flight."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
