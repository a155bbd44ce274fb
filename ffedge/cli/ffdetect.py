"""``ffdetect``: detect faces in images with a model or an exported artifact."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ffedge.cli import detect

    return detect.main(argv)


if __name__ == "__main__":
    sys.exit(main())
