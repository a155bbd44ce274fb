"""FeatherFace Edge: FeatherFace face detectors from a PyTorch checkpoint to verified edge artifacts."""

__version__ = "0.1.0"

from ffedge.errors import CheckpointError, FFEdgeError  # noqa: E402
from ffedge.spec import DeploymentSpec, PriorSpec  # noqa: E402

__all__ = ["CheckpointError", "DeploymentSpec", "FFEdgeError", "PriorSpec", "__version__"]
