"""The fidelity gate for every quantised artifact, and the search that keeps the fewest
layers in float until it passes (``--auto-fallback``).

The gate compares the artifact, run on the runtime it targets, with the FP32 torch
reference through the shared decoder on held-out photos: detections matched at IoU >= 0.5,
precision / recall / F1 and mean |Δscore|, plus the raw output errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ffedge.export.verify import verify_runner
from ffedge.runtimes.base import Runner
from ffedge.runtimes.compare import ParityReport

DEFAULT_MIN_F1 = 0.95
MAX_TRIALS = 32


@dataclass
class FidelityReport:
    parity: ParityReport
    min_f1: float
    excluded: list[str] = field(default_factory=list)
    trials: int = 0

    @property
    def passed(self) -> bool:
        return self.parity.detections.f1 >= self.min_f1

    def summary(self) -> str:
        d, o = self.parity.detections, self.parity.outputs
        verdict = "PASS" if self.passed else "FAIL"
        lines = [
            f"  fidelity vs torch FP32 on {self.parity.images} held-out images: precision "
            f"{d.precision:.4f}, recall {d.recall:.4f}, F1 {d.f1:.4f} (gate >= {self.min_f1}) "
            f"{verdict}; faces {d.matched}/{d.reference}, mean |Δscore| {d.mean_abs_dscore:.4f}",
            f"  raw max abs error: boxes {o['boxes'].max_abs:.3g}, scores "
            f"{o['scores'].max_abs:.3g}, landmarks {o['landmarks'].max_abs:.3g}",
        ]
        if self.excluded:
            shown = ", ".join(self.excluded[:8]) + (" ..." if len(self.excluded) > 8 else "")
            lines.append(f"  kept in float by auto-fallback ({len(self.excluded)} scopes, "
                         f"{self.trials} trials): {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "min_f1": self.min_f1, "excluded": self.excluded,
                "trials": self.trials, **self.parity.to_dict()}


def check_fidelity(reference: Runner, candidate: Runner, batches, min_f1: float) -> FidelityReport:
    return FidelityReport(verify_runner(reference, candidate, batches), min_f1)


# --- auto-fallback -----------------------------------------------------------------------

def _children(prefix: str, names: list[str]) -> list[str]:
    """Next path level below ``prefix`` among node names like ``/model/bifpn/bifpn.0/...``."""
    out: dict[str, None] = {}
    depth = prefix.count("/") + 1 if prefix else 1
    for n in names:
        if prefix and not n.startswith(prefix + "/") and n != prefix:
            continue
        parts = n.split("/")
        out["/".join(parts[: depth + 1]) if len(parts) > depth + 1 else n] = None
    return [c for c in out if c != prefix]


def expand(scopes: list[str], names: list[str]) -> list[str]:
    """Node names covered by ``scopes`` (each a node name or a path prefix)."""
    sel = []
    for n in names:
        if any(n == s or n.startswith(s + "/") for s in scopes):
            sel.append(n)
    return sel


@dataclass
class FallbackSearch:
    """Hierarchical, measured search for the fewest scopes to keep in float.

    ``build(excluded_node_names) -> Runner`` quantises with those nodes in float (any
    backend: ORT ``nodes_to_exclude``, NNCF ``ignored_scope``). Each level ranks its scopes by
    the F1 gained when that scope alone stays float (on the small probe set), adds the best
    ones until the gate passes, then refines every chosen scope into its children.
    """

    build: Callable[[list[str]], Runner]
    names: list[str]
    reference: Runner
    probe_batches: list
    min_f1: float
    max_trials: int = MAX_TRIALS
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    trials: int = 0
    _cache: dict = field(default_factory=dict)

    def f1(self, scopes: list[str]) -> float:
        key = tuple(sorted(expand(scopes, self.names)))
        if key not in self._cache:
            self.trials += 1
            runner = self.build(list(key))
            self._cache[key] = verify_runner(self.reference, runner, self.probe_batches).detections.f1
        return self._cache[key]

    def run(self) -> list[str] | None:
        """The scopes to keep in float, or None when even all-float-at-this-level fails."""
        top = _children("", self.names)
        while len(top) == 1 and _children(top[0], self.names):
            top = _children(top[0], self.names)
        return self._level([], top)

    def _level(self, fixed: list[str], frontier: list[str]) -> list[str] | None:
        if self.f1(fixed) >= self.min_f1:
            return fixed
        ranked = []
        for s in frontier:
            if self.trials >= self.max_trials:
                break
            ranked.append((self.f1(fixed + [s]), s))
        ranked.sort(key=lambda t: -t[0])
        self.log("  auto-fallback: " + ", ".join(f"{s.rsplit('/', 1)[-1]} {f:.3f}" for f, s in ranked[:6]))
        chosen: list[str] = []
        for _, s in ranked:
            chosen.append(s)
            if self.f1(fixed + chosen) >= self.min_f1:
                break
        else:
            return None
        # refine each chosen scope into its children, most valuable first
        result = list(chosen)
        for s in chosen:
            kids = _children(s, self.names)
            if len(kids) <= 1 or self.trials >= self.max_trials:
                continue
            others = [c for c in result if c != s]
            refined = self._level(fixed + others, kids)
            if refined is not None:
                result = others + [c for c in refined if c not in fixed + others]
        return result
