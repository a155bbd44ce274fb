"""Interchangeable runners with one ``infer()`` over every runtime."""

from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner
from ffedge.runtimes.loader import load_runner

__all__ = ["ArtifactInfo", "Outputs", "Runner", "load_runner"]
