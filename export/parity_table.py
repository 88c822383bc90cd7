"""The printed parity table: one row per artifact plus the PyTorch reference row, failures and notes below."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from edgecls.export.parity import ParityData, ParityReport, Reference, _fmt
from edgecls.runtime.spec import ModelSpec


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def _num(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _size(n: int) -> str:
    if n <= 0:
        return "-"
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def table(reports: Sequence[ParityReport], reference: Reference, spec: ModelSpec, data: ParityData) -> str:
    """Columns: size, the artifact's own temperature, top-1 agreement, p99 / max |Δprob| (both sides at the
    checkpoint's temperature), max |Δlogit|, accuracy, ECE (at the artifact's own temperature), decision agreement
    and positive recall at the artifact's own threshold, status; below: each gate with its n and 95 % interval."""
    pos = spec.positive
    head = ["artifact", "precision", "size", "T", "top-1 agree", "p99|Δprob|", "max|Δprob|", "max|Δlogit|",
            "accuracy", "ECE"] + (["decisions", f"{pos} recall", "thr"] if pos else []) + ["status"]
    t_ref = reference.temperature if reference.temperature is not None else spec.temperature
    thr_ref = reference.threshold if reference.threshold is not None else spec.threshold
    ref_row = ["pytorch (reference)", "fp32", "-", _num(t_ref, 3), "-", "-", "-", "-", _pct(reference.accuracy),
               _num(reference.ece)] + (["-", _pct(reference.positive_recall), _num(thr_ref, 3)] if pos else []) + ["-"]
    rows = [head, ref_row]
    for r in reports:
        rows.append([r.artifact, r.precision, _size(r.size_bytes), _num(r.temperature, 3), _pct(r.agreement),
                     "-" if r.p99_abs_prob is None else _fmt(r.p99_abs_prob),
                     "-" if r.max_abs_prob is None else _fmt(r.max_abs_prob),
                     "-" if r.max_abs_logit is None else _fmt(r.max_abs_logit), _pct(r.accuracy), _num(r.ece)]
                    + ([_pct(r.decision_agreement), _pct(r.positive_recall), _num(r.threshold, 3)] if pos else [])
                    + [r.status])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = [f"parity on {data.source}; |Δprob| at the checkpoint's temperature, ECE at each artifact's own"
             + (f"; decisions and {pos} recall at each artifact's own threshold" if pos else "")]
    for j, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in reports:
        if r.precision.startswith("int8") and r.checks:
            gated = [c for c in r.checks if c.gated]
            lines.append(f"  {r.artifact} gates: " + "; ".join(
                f"{c.name} {_fmt(c.value)} {'ok' if c.ok else 'FAIL'}"
                + (f" [{_fmt(c.interval[0])}..{_fmt(c.interval[1])}]" if c.interval else "") for c in gated)
                + (f" (n={gated[0].n}{', low evidence' if r.low_evidence else ''})" if gated else ""))
            if r.temperature_source:
                lines.append(f"  {r.artifact}: temperature {r.temperature_source}")
        for f in r.failures:
            lines.append(f"  {r.artifact}: FAILED — {f}")
        for w in r.warnings:
            lines.append(f"  {r.artifact}: WARNING (reported, not gated; --strict gates it) — {w}")
        for n in r.notes:
            lines.append(f"  {r.artifact}: {n}")
    return "\n".join(lines)
