"""``edgecls bench`` results as text: the Markdown report and the terminal latency table (same numbers)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from edgecls.evaluation.results import BenchResult


def _ratio(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _num(x: Optional[float], fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _header(result: BenchResult) -> List[str]:
    from edgecls.evaluation.machine import machine_summary

    lines = [f"### edgecls bench — {result.date}", "", f"- machine: {machine_summary(result.machine)}"]
    if result.command:
        lines.append(f"- command: `{result.command}`")
    c = result.config
    lines.append(
        f"- method: {c['warmup']} warm-up + {c['rounds']} interleaved rounds × {c['iters']} timed inferences per "
        f"artifact; medians over rounds; reference {'`' + result.reference + '`' if result.reference else 'none'}"
    )
    if result.peak.get("gflops"):
        src = result.peak.get("source", {})
        peaks = ", ".join(
            f"{v:.0f} GFLOP/s at {k} thread(s){' (' + src[k] + ')' if k in src else ''}"
            for k, v in result.peak["gflops"].items()
        )
        lines.append(f"- FP32 practical peak: {peaks} ({result.peak['method']})")
    return lines


def _latency_markdown(result: BenchResult) -> List[str]:
    arts = {a.path: a for a in result.artifacts}
    lines = [
        "",
        "| model | precision | size MB | batch | threads | p50 ms | ×ref | p90 ms | p99 ms | img/s | ×ref | "
        "GFLOP/s | % FP32 peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.latency:
        a = arts[r.model]
        lines.append(
            f"| {a.label}{' (reference)' if a.is_reference else ''} | {r.precision} ({a.kind}) | "
            f"{a.size_bytes / 1e6:.1f} | {r.batch} | {r.threads} | {r.p50_ms:.2f} | {_ratio(r.ratio_p50)} | "
            f"{r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.images_per_s:.1f} | {_ratio(r.ratio_throughput)} | "
            f"{_num(r.gflops_per_s, '.1f')} | {_num(None if r.peak_fraction is None else 100 * r.peak_fraction, '.1f')} |"
        )
    return lines


def _stages_markdown(result: BenchResult) -> List[str]:
    arts = {a.path: a for a in result.artifacts}
    lines: List[str] = []
    if result.preprocess:
        lines += [
            "",
            "| preprocessing (1 thread) | ms / frame | per-round range | torchvision PIL ms | ×torchvision |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in result.preprocess:
            lines.append(
                f"| {p.input} | {p.ms_per_frame:.2f} | {p.ms_spread[0]:.2f}–{p.ms_spread[1]:.2f} | "
                f"{_num(p.reference_ms, '.2f')} | {_ratio(p.ratio)} |"
            )
    if result.end_to_end:
        lines += [
            "",
            "| end to end (decode + preprocess + infer, batch 1) | threads | frames/s | ms / frame | ×ref |",
            "|---|---:|---:|---:|---:|",
        ]
        for e in result.end_to_end:
            lines.append(
                f"| {arts[e.model].label} ({e.source}) | {e.threads} | {e.frames_per_s:.1f} | "
                f"{e.ms_per_frame:.2f} | {_ratio(e.ratio_fps)} |"
            )
    return lines


def bench_markdown(result: BenchResult) -> str:
    """Header (machine, command, method, peak), latency table, preprocessing and end-to-end tables, notes."""
    lines = _header(result) + _latency_markdown(result) + _stages_markdown(result)
    for n in result.notes:
        lines.append(f"\n> {n}")
    return "\n".join(lines) + "\n"


def latency_table(result: BenchResult) -> str:
    """The terminal version of the latency table (same numbers as the Markdown)."""
    arts = {a.path: a for a in result.artifacts}
    w = max(12, max(len(arts[r.model].label) for r in result.latency)) if result.latency else 12
    head = (f"{'model':<{w}}  {'prec':<9} {'batch':>5} {'thr':>3} {'p50 ms':>8} {'×ref':>6} {'p90 ms':>8} "
            f"{'p99 ms':>8} {'img/s':>8} {'×ref':>6} {'%peak':>6}")
    lines = [head]
    for r in result.latency:
        lines.append(
            f"{arts[r.model].label:<{w}}  {r.precision:<9} {r.batch:>5} {r.threads:>3} {r.p50_ms:>8.2f} "
            f"{_ratio(r.ratio_p50):>6} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.images_per_s:>8.1f} "
            f"{_ratio(r.ratio_throughput):>6} "
            f"{'–' if r.peak_fraction is None else format(100 * r.peak_fraction, '.1f'):>6}"
        )
    return "\n".join(lines)
