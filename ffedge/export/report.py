"""The one report every export returns: what was written and how it was judged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.runtimes.compare import ParityReport


@dataclass
class ExportReport:
    path: Path
    model: str
    target: str
    precision: str
    parameters: int
    size_bytes: int = 0
    node_histogram: dict[str, int] = field(default_factory=dict)
    parity: ParityReport | None = None  # float verification, or the INT8 gate's parity
    min_f1: float = 0.0
    gated: bool = True  # False: detection agreement reported, not enforced
    excluded: list[str] = field(default_factory=list)  # kept float by the fallback search
    trials: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # target-specific facts (opset, io)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    # --- the names earlier releases exposed -----------------------------------------------
    @property
    def opset(self) -> int | None:
        return self.details.get("opset")

    @property
    def simplifier(self) -> str | None:
        return self.details.get("simplifier")

    @property
    def passed(self) -> bool:
        return self.parity is None or self.parity.detections.f1 >= self.min_f1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"passed": self.passed, "min_f1": self.min_f1,
                             "excluded": self.excluded, "trials": self.trials}
        if self.parity is not None:
            d.update(self.parity.to_dict())
        return d

    def summary(self) -> str:
        nodes = sum(self.node_histogram.values())
        top = ", ".join(f"{k} {v}" for k, v in list(self.node_histogram.items())[:8])
        facts = " | ".join(f"{k} {v}" for k, v in self.details.items()
                           if isinstance(v, (str, int, float)) and k != "simplifier")
        lines = [f"exported {self.model} -> {self.path}",
                 f"  {self.target} {self.precision} | parameters {self.parameters:,} | file "
                 f"{self.size_bytes / 1024:.1f} KiB" + (f" | {facts}" if facts else ""),
                 f"  {nodes} ops ({top})"]
        if self.parity is not None:
            lines.extend(self._parity_lines())
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append(f"  done in {self.seconds:.1f} s")
        return "\n".join(lines)

    def _parity_lines(self) -> list[str]:
        p = self.parity
        assert p is not None
        d, o = p.detections, p.outputs
        gate = (f"gate >= {self.min_f1} {'PASS' if self.passed else 'FAIL'}" if self.gated
                else "reported, not gated")
        if self.precision == "fp32":
            return [f"  verified vs torch on {p.images} images: max abs err boxes "
                    f"{o['boxes'].max_abs:.2e}, scores {o['scores'].max_abs:.2e}, landmarks "
                    f"{o['landmarks'].max_abs:.2e}; faces {d.matched}/{d.reference} agree "
                    f"(F1 {d.f1:.4f}, {gate})"]
        which = "held-out images" if self.precision == "int8" else "images"
        lines = [f"  fidelity vs torch FP32 on {p.images} {which}: precision "
                 f"{d.precision:.4f}, recall {d.recall:.4f}, F1 {d.f1:.4f} ({gate}); faces "
                 f"{d.matched}/{d.reference}, mean |Δscore| {d.mean_abs_dscore:.4f}",
                 f"  raw max abs error: boxes {o['boxes'].max_abs:.3g}, scores "
                 f"{o['scores'].max_abs:.3g}, landmarks {o['landmarks'].max_abs:.3g}"]
        if self.excluded:
            shown = ", ".join(self.excluded[:8]) + (" ..." if len(self.excluded) > 8 else "")
            lines.append(f"  kept in float by the fallback search ({len(self.excluded)} "
                         f"scopes, {self.trials} trials): {shown}")
        return lines
