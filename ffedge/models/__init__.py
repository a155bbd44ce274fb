"""The FeatherFace model zoo behind one registry (``create_model``, ``list_models``)."""

from ffedge.models.base import FaceDetector
from ffedge.models.registry import create_model, get_spec, list_models, register_model

__all__ = ["FaceDetector", "create_model", "get_spec", "list_models", "register_model"]
