"""The FeatherFace model zoo behind one registry (``create_model``, ``list_models``), and
``wrap_user_model`` for a detector defined elsewhere (bring your own model)."""

from ffedge.models.base import FaceDetector
from ffedge.models.registry import create_model, get_spec, list_models, register_model
from ffedge.models.user import load_model_def, wrap_user_model

__all__ = ["FaceDetector", "create_model", "get_spec", "list_models", "load_model_def",
           "register_model", "wrap_user_model"]
