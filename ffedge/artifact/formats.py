"""Our metadata inside each artifact format, read and written in one place.

* ONNX: ``metadata_props`` (``ffedge.*`` keys) plus producer fields.
* OpenVINO IR: ``rt_info/ffedge/<key>`` on the ``ov.Model``.
* TFLite: a flatbuffer ``Metadata`` entry named ``ffedge`` holding a JSON object.
* Every format that cannot embed it (or as a mirror): a ``<artifact>.json`` sidecar
  (:mod:`ffedge.artifact.metadata`).

Format libraries are imported lazily; this module itself needs numpy only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ffedge.artifact.metadata import PREFIX, ArtifactMetadata
from ffedge.errors import require

RT_INFO_SECTION = "ffedge"
TFLITE_METADATA_NAME = "ffedge"


# --- ONNX ---------------------------------------------------------------------------------

def stamp_onnx(proto: Any, meta: ArtifactMetadata) -> None:
    """Replace our metadata_props (keeping foreign ones) and the producer fields."""
    keep = [p for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.to_props().items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "featherface-edge"
    proto.producer_version = meta.tool_version
    proto.doc_string = f"FeatherFace {meta.model} face detector ({meta.precision})"


def read_onnx(proto: Any) -> ArtifactMetadata | None:
    return ArtifactMetadata.from_props({p.key: p.value for p in proto.metadata_props})


# --- OpenVINO -----------------------------------------------------------------------------

def read_rt_info(model: Any) -> ArtifactMetadata | None:
    """Our ``rt_info`` section of an ``ov.Model`` as metadata, or None."""
    rt = model.get_rt_info()
    if RT_INFO_SECTION not in rt:
        return None
    section = rt[RT_INFO_SECTION]
    if not isinstance(section, dict):
        return None
    props = {f"{PREFIX}{k}": (v.astype(str) if hasattr(v, "astype") else str(v))
             for k, v in section.items()}
    return ArtifactMetadata.from_props(props)


def write_rt_info(model: Any, meta: ArtifactMetadata) -> None:
    """Put every ``ArtifactMetadata.to_props()`` item under ``rt_info/ffedge/<key>``."""
    for key, value in meta.to_props().items():
        model.set_rt_info(value, [RT_INFO_SECTION, key.removeprefix(PREFIX)])


# --- TFLite -------------------------------------------------------------------------------

def tflite_schema() -> Any:
    """The TFLite flatbuffer schema module shipped with ai-edge-litert."""
    return require("ai_edge_litert.schema_py_generated", "tflite")


def read_tflite(data: bytes) -> dict[str, str] | None:
    """The props stored under the ``ffedge`` metadata entry of a ``.tflite`` image, or None.

    Reads the flatbuffer lazily (no copy of the weights), so it is cheap on a large model.
    """
    fb = tflite_schema()
    try:
        model = fb.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            if (md.Name() or b"").decode() != TFLITE_METADATA_NAME:
                continue
            raw = model.Buffers(md.Buffer()).DataAsNumpy()
            if isinstance(raw, int):  # flatbuffers returns 0 for an empty vector
                return None
            return json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, IndexError, UnicodeDecodeError, TypeError):
        return None
    return None


def embed_tflite(data: bytes, props: dict[str, str]) -> bytes:
    """``data`` with ``props`` stored as the ``ffedge`` metadata buffer (replacing an older
    one), re-serialised through the schema's object API."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = tflite_schema()
    model = fu.read_model_from_bytearray(bytearray(data))
    payload = np.frombuffer(json.dumps(props, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    model.metadata = [m for m in (model.metadata or [])
                      if _name(m.name) != TFLITE_METADATA_NAME]
    buf = fb.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name = TFLITE_METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(fu.convert_object_to_bytearray(model))


def _name(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
