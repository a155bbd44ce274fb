"""``ffexport <target>``: one command body for every target in the registry.

Shared flags (model, size, precision, output, verification, calibration and gate) are
defined here once; a target's own flags come from its record's ``cli`` module
(``add_arguments(parser)`` and ``options(args, precision)``).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffedge.artifact.targets import TargetRecord
from ffedge.cli.args import (
    add_model_args,
    add_model_def_args,
    add_quant_args,
    calibration,
    imgsz,
    resolve_checkpoint,
    user_model,
)
from ffedge.cli.verbosity import quiet_unless_verbose

EXPORT_MEMORY_FACTOR = 3.0  # tracing and converters hold several copies of activations


@dataclass
class ExportCommand:
    """The ``add_arguments``/``run`` pair ``dispatch`` expects, for one record (and an
    optional fixed precision: ``ffexport int8``)."""

    record: TargetRecord
    precision: str | None = None

    def _target_cli(self) -> Any:
        return importlib.import_module(self.record.cli) if self.record.cli else None

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model_args(p, model_required=False)
        add_model_def_args(p)
        if self.precision is None and len(self.record.precisions) > 1:
            p.add_argument("--precision", choices=self.record.precisions,
                           default=self.record.precisions[0],
                           help="fp32/fp16: verified against torch; int8: calibrated, gated")
        p.add_argument("-o", "--output", type=Path, default=None,
                       help=f"output {'/'.join(self.record.suffixes)} (default: MODEL"
                            f"[_PRECISION]{self.record.suffixes[0]})")
        p.add_argument("--verify-images", type=Path, nargs="*", default=[],
                       help="photos to verify float exports on (default: drawn faces for "
                            "trained weights, noise for random ones)")
        p.add_argument("--no-verify", action="store_true", help="skip float verification")
        p.add_argument("--threads", type=int, default=None, help="threads for verification")
        p.add_argument("--optimize", type=int, choices=(0, 1, 2), default=None,
                       help="graph passes: 0 = as traced, 1 = exact fusions (merged heads, "
                            "folded BN/shuffle/softmax, leaner DCN), 2 = + runtime forms "
                            "(tap-major DCN); default: 2 for openvino, else 1")
        if "int8" in self.record.precisions:
            add_quant_args(p, required=self.precision == "int8")
        cli = self._target_cli()
        if cli is not None:
            cli.add_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        from ffedge.export.pipeline import ExportRequest, export

        precision = self.precision or getattr(args, "precision", self.record.precisions[0])
        cli = self._target_cli()
        options = cli.options(args, precision) if cli is not None else None
        size = imgsz(args, EXPORT_MEMORY_FACTOR)  # refused before any weights are read
        net = user_model(args)  # --model-def: built and checkpoint-loaded here
        request = ExportRequest(
            net.model_name if net is not None else args.model, resolve_checkpoint(args),
            args.output, size, precision, options,
            verify=not args.no_verify, verify_images=args.verify_images,
            calibration=calibration(args), min_f1=getattr(args, "min_f1", None),
            fallback=not getattr(args, "no_fallback", False), threads=args.threads,
            optimize=args.optimize, module=net,
            random_init=bool(getattr(args, "random_init", False)))
        with quiet_unless_verbose(args.verbose, stdout=True):  # NNCF draws bars on stdout
            report = export(self.record, request)
        print(report.summary())
        return 0


def export_subcommands() -> dict[str, tuple[Any, str]]:
    """``ffexport``'s subcommands, read from the target registry."""
    from ffedge.artifact.targets import all_targets

    commands: dict[str, tuple[Any, str]] = {}
    for record in all_targets():
        if record.exporter is None:
            continue
        for name in (record.name, *record.aliases):
            commands[name] = (_factory(record, None), record.summary if name == record.name
                              else f"alias of {record.name}")
        for preset in record.presets:
            commands[preset.command] = (_factory(record, preset.precision), preset.summary)
    return commands


def _factory(record: TargetRecord, precision: str | None):
    return lambda: ExportCommand(record, precision)
