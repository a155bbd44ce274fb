"""What every ffedge command shares: one-line errors, exit codes, subcommand dispatch."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ffedge.errors import FFEdgeError
from ffedge.spec import SIZE_DIVISOR

EXIT_USAGE = 2


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (argparse prints the whole usage block
    first): ``error: ffexport openvino: argument --optimize: invalid choice: 5 (choose from
    0, 1, 2); see ffexport openvino --help``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def guarded(fn: Callable[[], int]) -> int:
    """Run ``fn``; turn user errors into one line on stderr and a non-zero exit code."""
    try:
        return int(fn() or 0)
    except FFEdgeError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        return fail(f"{exc.strerror}: {exc.filename}")
    except MemoryError:
        return fail("out of memory: use a smaller --imgsz / --size")


def parse_imgsz(values: Sequence[int] | None) -> tuple[int, int] | None:
    """``--imgsz 640`` or ``--imgsz H W`` -> (H, W), each divisible by 32."""
    if not values:
        return None
    if len(values) not in (1, 2):
        raise FFEdgeError("--imgsz takes one size or two (H W)")
    h, w = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if h <= 0 or w <= 0 or h % SIZE_DIVISOR or w % SIZE_DIVISOR:
        raise FFEdgeError(f"--imgsz {h} {w}: sizes must be positive multiples of {SIZE_DIVISOR}")
    return int(h), int(w)


def dispatch(
    prog: str,
    description: str,
    subcommands: dict[str, tuple[Any, str]],
    argv: Sequence[str] | None,
    default: str | None = None,
) -> int:
    """Subcommands live in their own modules (``add_arguments(parser)``, ``run(args)``).

    ``subcommands`` maps a name to (module path or a zero-argument factory of an object
    with ``add_arguments``/``run``, one-line help). With ``default``, an argv
    that does not start with a subcommand name runs that one (``ffbench --runtime ...``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in subcommands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if default and (not argv or (argv[0] not in subcommands and argv[0] not in ("-h", "--help"))):
        if argv:
            argv = [default, *argv]
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else EXIT_USAGE
    name = argv[0]
    if name not in subcommands:
        return fail(f"unknown command {name!r}; choose one of: {', '.join(subcommands)}")

    def run() -> int:
        source = subcommands[name][0]
        module = importlib.import_module(source) if isinstance(source, str) else source()
        sp = Parser(prog=f"{prog} {name}", description=subcommands[name][1])
        module.add_arguments(sp)
        args = sp.parse_args(argv[1:])
        return module.run(args)

    return guarded(run)
