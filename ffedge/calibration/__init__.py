"""Calibration data for INT8 quantisation: one dataset abstraction for every backend.

Choose images from a source (WIDER FACE tree, RetinaFace ``label.txt``, image folder or a
text file of paths), preprocess them exactly as inference does (the deployment spec through
:func:`ffedge.decoder.transform.preprocess`), cache the tensors on disk, and hand them to
ONNX Runtime, NNCF/OpenVINO, TFLite or TensorRT in the form each expects::

    from ffedge.calibration import CalibrationDataset, split_source

    calib_files, eval_files = split_source("WIDER_train", n_calib=300, n_eval=100, seed=0)
    ds = CalibrationDataset(calib_files, spec)
    quantize_static(fp32, int8, ds.as_ort_reader("images"), ...)

See ``docs/calibration.md``.
"""

from ffedge.calibration.cache import (
    CACHE_ENV,
    TensorCache,
    clear_cache,
    default_cache_dir,
    tensor_key,
)
from ffedge.calibration.dataset import CalibrationDataset, SkippedImage
from ffedge.calibration.sources import (
    DEFAULT_NUM_IMAGES,
    SOURCE_KINDS,
    CalibrationSource,
    detect_source_kind,
    open_source,
    sample_source,
    split_source,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_NUM_IMAGES",
    "SOURCE_KINDS",
    "CalibrationDataset",
    "CalibrationSource",
    "SkippedImage",
    "TensorCache",
    "clear_cache",
    "default_cache_dir",
    "detect_source_kind",
    "open_source",
    "sample_source",
    "split_source",
    "tensor_key",
]
