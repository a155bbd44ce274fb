"""What every artifact carries so a consumer can feed and decode it from the file alone.

Stored as string key/values: ONNX ``metadata_props``, OpenVINO ``rt_info``, TFLite
metadata, and always mirrored in a ``<artifact>.json`` sidecar by targets that cannot
embed it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge import __version__
from ffedge.spec import DeploymentSpec

PREFIX = "ffedge."
INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "landmarks")

OUTPUT_SEMANTICS: dict[str, str] = {
    "boxes": "[B,P,4] box deltas (dcx, dcy, dw, dh) against priors; decode "
    "cx = pcx + dcx*v0*pw, cy = pcy + dcy*v0*ph, w = pw*exp(dw*v1), h = ph*exp(dh*v1)",
    "scores": "[B,P,2] softmax probabilities (background, face)",
    "landmarks": "[B,P,10] five (x, y) landmark deltas; decode x = pcx + d*v0*pw, y = pcy + d*v0*ph",
    "priors": "RetinaFace order: level, row, column, anchor; centre ((j+0.5)*step/W, "
    "(i+0.5)*step/H), size (min_size/W, min_size/H), normalised to the input size",
}


@dataclass
class ArtifactMetadata:
    model: str
    spec: DeploymentSpec
    precision: str = "fp32"
    checkpoint_sha256: str = ""
    scores: str = "probabilities"
    tool_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        props = {
            "model": self.model,
            "spec": self.spec.to_json(),
            "precision": self.precision,
            "checkpoint_sha256": self.checkpoint_sha256 or "none (random init)",
            "scores": self.scores,
            "outputs": json.dumps(OUTPUT_SEMANTICS, sort_keys=True),
            "input": INPUT_NAME,
            "tool": f"featherface-edge {self.tool_version}",
        }
        for k, v in sorted(self.extra.items()):
            props[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        return {PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ArtifactMetadata | None:
        """Parse our keys back; None when the artifact was not made by ffedge."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if "spec" not in ours or "model" not in ours:
            return None
        known = {"model", "spec", "precision", "checkpoint_sha256", "scores", "outputs",
                 "input", "tool"}
        extra: dict[str, Any] = {}
        for k, v in ours.items():
            if k in known:
                continue
            try:
                extra[k] = json.loads(v)
            except ValueError:
                extra[k] = v
        sha = ours.get("checkpoint_sha256", "")
        return cls(
            model=ours["model"],
            spec=DeploymentSpec.from_json(ours["spec"]),
            precision=ours.get("precision", "fp32"),
            checkpoint_sha256="" if sha.startswith("none") else sha,
            scores=ours.get("scores", "probabilities"),
            tool_version=ours.get("tool", "").rpartition(" ")[2],
            extra=extra,
        )

    def to_sidecar(self) -> dict[str, Any]:
        d = {k[len(PREFIX):]: v for k, v in self.to_props().items()}
        d["spec"] = self.spec.to_dict()
        d["outputs"] = OUTPUT_SEMANTICS
        d["output_names"] = list(OUTPUT_NAMES)
        return d


def sidecar_path(artifact: str | Path) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def read_sidecar(artifact: str | Path) -> ArtifactMetadata | None:
    p = sidecar_path(artifact)
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    props = {PREFIX + k: (v if isinstance(v, str) else json.dumps(v)) for k, v in d.items()}
    props[PREFIX + "spec"] = json.dumps(d["spec"])
    return ArtifactMetadata.from_props(props)


def sidecar_json(meta: ArtifactMetadata) -> str:
    return json.dumps(meta.to_sidecar(), indent=2, sort_keys=True) + "\n"
