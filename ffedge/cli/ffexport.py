"""``ffexport``: PyTorch checkpoint -> verified deployment artifact.

Its subcommands are the target registry's records (:mod:`ffedge.artifact.targets`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ffedge.cli.common import dispatch
from ffedge.cli.export_cmd import export_subcommands


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(
        "ffexport",
        "Export a FeatherFace model to a verified, self-describing deployment artifact.",
        export_subcommands(),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
