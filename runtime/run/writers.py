"""Records to a stream as they come: JSON lines (the default), CSV, or a human-readable table."""
from __future__ import annotations

import csv
import json
from typing import Any, Dict, TextIO


class JsonlWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, rec: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class CsvWriter:
    COLUMNS = (
        "source", "index", "frame", "path", "label", "confidence", "decision", "positive", "p_positive", "topk",
        "set", "unknown", "decode_ms", "preprocess_ms", "infer_ms", "latency_ms", "error",
    )

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.w = csv.writer(stream, lineterminator="\n")
        self.w.writerow(self.COLUMNS)

    def write(self, rec: Dict[str, Any]) -> None:
        t = rec.get("timings_ms", {})
        row = dict(rec)
        row["topk"] = "|".join(f"{k['label']}:{k['p']:.4f}" for k in rec.get("topk", []))
        if "set" in rec:
            row["set"] = "|".join(rec["set"])
        row.update({"decode_ms": t.get("decode"), "preprocess_ms": t.get("preprocess"), "infer_ms": t.get("infer"),
                    "latency_ms": t.get("latency")})
        self.w.writerow(["" if row.get(c) is None else row.get(c) for c in self.COLUMNS])
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class TableWriter:
    """A human-readable streaming table (one line per image)."""

    def __init__(self, stream: TextIO, width: int = 44) -> None:
        self.stream = stream
        self.width = width
        self.stream.write(
            f"{'item':<{width}} {'label':<14} {'conf':>6} {'decision':<10} {'p_pos':>6} {'infer_ms':>9}\n"
            + "-" * (width + 52) + "\n"
        )

    def _item(self, rec: Dict[str, Any]) -> str:
        item = rec.get("path") or f"{rec['source']}#{rec.get('frame', rec['index'])}"
        return item if len(item) <= self.width else "…" + item[-(self.width - 1):]

    def write(self, rec: Dict[str, Any]) -> None:
        item = self._item(rec)
        if "error" in rec:
            self.stream.write(f"{item:<{self.width}} ERROR: {rec['error']}\n")
        else:
            pp = "" if rec.get("p_positive") is None else f"{rec['p_positive']:.3f}"
            self.stream.write(
                f"{item:<{self.width}} {rec['label']:<14} {rec['confidence']:>6.3f} {rec['decision']:<10} {pp:>6} "
                f"{rec['timings_ms']['infer']:>9.2f}\n"
            )
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def make_writer(fmt: str, stream: TextIO):
    return {"jsonl": JsonlWriter, "csv": CsvWriter, "table": TableWriter}[fmt](stream)
