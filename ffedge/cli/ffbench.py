"""``ffbench``: latency, parity and accuracy of a model or artifact on a runtime."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ffedge.cli.common import dispatch

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("ffedge.cli.bench_run", "Benchmark one runtime (the default: `ffbench --runtime R ...`)"),
    "compare": ("ffedge.cli.bench_compare", "Several runtimes on the same inputs, one table"),
    "widerface": ("ffedge.cli.bench_widerface", "Run a model or artifact over WIDER FACE val and score it"),
    "widerface-eval": ("ffedge.cli.bench_widerface_eval", "Score a WIDER FACE predictions folder with the official protocol"),
    "sweep": ("ffedge.cli.bench_sweep", "Export every candidate artifact, measure each, print the Pareto table and what to ship"),
    "decoder": ("ffedge.cli.bench_decoder", "Time the shared decoder (decode + NMS) against the classic reference"),
}


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # checked by --host runs
        from ffedge import __version__

        print(f"ffbench {__version__}")
        return 0
    return dispatch(
        "ffbench",
        "Measure a FeatherFace model or artifact: latency, memory, size, parity, accuracy.",
        SUBCOMMANDS,
        argv,
        default="run" if "run" in SUBCOMMANDS else None,
    )


if __name__ == "__main__":
    sys.exit(main())
