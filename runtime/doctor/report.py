"""The doctor's report: findings in a fixed order, as text for a person or JSON for a script."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edgecls.core.errors import EXIT_CAPABILITY, EXIT_OK
from edgecls.runtime.doctor.checks import Finding
from edgecls.runtime.doctor.probes import Facts

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


@dataclass
class Report:
    facts: Facts
    findings: List[Finding]
    model: Optional[Dict[str, Any]] = None
    version: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def problems(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "fail"]

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ready else EXIT_CAPABILITY

    def verdict(self) -> str:
        what = f"for {self.model['path']} (--device {self.model['device']})" if self.model else "to run ONNX models"
        if self.ready:
            return f"READY {what}"
        return f"NOT READY {what}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''} (exit 4)"

    def to_dict(self) -> Dict[str, Any]:
        return {"edgecls": self.version, "ready": self.ready, "exit_code": self.exit_code, "verdict": self.verdict(),
                "model": self.model, "findings": [f.to_dict() for f in self.findings], **self.facts.to_dict()}


def render_text(report: Report) -> str:
    lines = [f"edgecls doctor (edgecls {report.version})", ""]
    width = max((len(f.topic) for f in report.findings), default=8)
    for f in report.findings:
        lines.append(f"  [{_MARK[f.level]}] {f.topic:<{width}}  {f.message}")
        if f.fix and f.level != "ok":
            lines.append(f"  {'':6} {'':<{width}}  fix: {f.fix}")
    lines += ["", report.verdict()]
    return "\n".join(lines) + "\n"
