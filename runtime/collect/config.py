"""What ``--collect`` was asked to do, validated once: the folder, the rules, the caps."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from edgecls.core.errors import InputError

RULES = ("unknown", "empty-set", "multi-set", "uncertain", "low-margin")
DEFAULT_RULES = RULES
DEFAULT_MARGIN = 0.1  # low-margin: top-1 minus top-2 probability below this
DEFAULT_MAX_MB = 2048.0  # the whole collection folder, images + manifest
DEFAULT_RATE = 20  # kept frames per minute per live source and rule (0: no cap)
DEFAULT_DUP_BITS = 4  # dHash Hamming distance at or below this: the same scene (see bench/bench_collect.py)
DEFAULT_QUEUE = 8  # frames waiting for the writer; one more is dropped and counted (the loop never waits)


@dataclass(frozen=True)
class CollectConfig:
    """``--collect DIR`` and its options."""

    folder: str
    rules: Tuple[str, ...] = DEFAULT_RULES
    margin: float = DEFAULT_MARGIN
    max_mb: float = DEFAULT_MAX_MB
    rate_per_min: int = DEFAULT_RATE
    dup_bits: int = DEFAULT_DUP_BITS  # -1: no near-duplicate suppression
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        if not str(self.folder).strip():
            raise InputError("--collect needs a folder, e.g. --collect collected/")
        rules = tuple(self.rules)
        bad = [r for r in rules if r not in RULES]
        if bad or not rules:
            raise InputError(f"--collect-rules {','.join(rules)!r}: unknown rule(s) {bad}; valid: {','.join(RULES)} "
                             "(low-margin takes a threshold as low-margin:0.15)")
        object.__setattr__(self, "rules", tuple(dict.fromkeys(rules)))
        if not (isinstance(self.margin, (int, float)) and 0.0 < float(self.margin) < 1.0):
            raise InputError(f"low-margin threshold must be in (0, 1), e.g. low-margin:0.1, got {self.margin!r}")
        if not (isinstance(self.max_mb, (int, float)) and math.isfinite(self.max_mb) and self.max_mb > 0):
            raise InputError(f"--collect-max-mb must be a number of MB > 0, got {self.max_mb!r}")
        if not (isinstance(self.rate_per_min, int) and self.rate_per_min >= 0):
            raise InputError(f"--collect-rate must be an integer >= 0 (frames a minute per live source and rule; "
                             f"0: no cap), got {self.rate_per_min!r}")
        if not (isinstance(self.dup_bits, int) and -1 <= self.dup_bits <= 32):
            raise InputError(f"near-duplicate distance must be -1 (off) .. 32 bits, got {self.dup_bits!r}")
        if not (isinstance(self.queue, int) and self.queue >= 1):
            raise InputError(f"collection queue must be >= 1 frame, got {self.queue!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


def parse_rules(text: Optional[str]) -> Tuple[Tuple[str, ...], float]:
    """``unknown,empty-set,low-margin:0.15`` → ``(rules, margin)``; None or empty: the defaults."""
    if text is None or not str(text).strip():
        return DEFAULT_RULES, DEFAULT_MARGIN
    rules, margin = [], DEFAULT_MARGIN
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition(":")
        if value:
            if name != "low-margin":
                raise InputError(f"--collect-rules {part!r}: only low-margin takes a value (low-margin:0.15)")
            try:
                margin = float(value)
            except ValueError:
                raise InputError(f"--collect-rules {part!r}: the margin must be a number, e.g. low-margin:0.15") from None
        rules.append(name)
    return tuple(rules), margin
