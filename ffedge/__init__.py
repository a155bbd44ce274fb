"""FeatherFace Edge: FeatherFace face detectors from a PyTorch checkpoint to verified edge artifacts."""

__version__ = "0.1.0"

import os as _os  # noqa: E402

# onnxruntime (1DS telemetry on Linux/macOS since 1.2x) writes a device id and an event
# database under ~/.cache/Microsoft/DeveloperTools on import and uploads usage events.
# ORT_DISABLE_TELEMETRY=1, set before onnxruntime loads, turns all of it off (measured:
# nothing is written under $HOME). FFEDGE_ORT_TELEMETRY=1 leaves onnxruntime's default.
if _os.environ.get("FFEDGE_ORT_TELEMETRY", "") != "1":
    _os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ffedge.errors import CheckpointError, FFEdgeError  # noqa: E402
from ffedge.spec import DeploymentSpec, PriorSpec  # noqa: E402

__all__ = ["CheckpointError", "DeploymentSpec", "FFEdgeError", "PriorSpec", "__version__"]
