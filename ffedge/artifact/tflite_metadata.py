"""The standard TFLite metadata (``TFLITE_METADATA``) that Android/iOS tooling reads.

MediaPipe Tasks, the LiteRT support library and Android Studio's model binding look for a
``Model.metadata`` entry named ``TFLITE_METADATA`` whose buffer is a ``ModelMetadata``
flatbuffer (tflite-support ``metadata_schema.fbs``, file identifier ``M001``). A float
image input without ``NormalizationOptions`` is refused there, and an image input whose
``ImageProperties.color_space`` is not RGB too ("Only RGB color space is supported").
``ffexport tflite`` therefore writes RGB-input models by default (the zoo's BGR folded into
the first conv); a ``--channel-order bgr`` model is described with color_space UNKNOWN.

Written here with the ``flatbuffers`` Builder, field by field after the schema (slot
numbers below); read back with :func:`parse_metadata_buffer`, which walks the tables with
flatbuffers' generic ``Table`` API. Only schema 1.0 fields are used, so
``min_parser_version`` is ``1.0.0`` (any metadata parser reads it).

This module sits in the artifact layer: the exporter writes it, runtimes may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffedge.errors import FFEdgeError, require

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
#: Largest schema version among the fields we populate (all exist since schema 1.0.0).
MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enums and union tags (NONE = 0 for unions).
COLOR_SPACES = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}
BOX_TYPES = {"UNKNOWN": 0, "BOUNDARIES": 1, "UPPER_LEFT": 2, "CENTER": 3}
COORDINATE_TYPES = {"RATIO": 0, "PIXEL": 1}
CONTENT_TAGS = {"feature": 1, "image": 2, "bounding_box": 3}
PROCESS_TAGS = {"normalization": 1, "score_calibration": 2, "score_thresholding": 3}

# Field slots (0-based declaration order in metadata_schema.fbs; a union takes two slots:
# its type byte, then its value).
_IMAGE_SIZE = {"width": 0, "height": 1}
_IMAGE_PROPS = {"color_space": 0, "default_size": 1}
_BOX_PROPS = {"index": 0, "type": 1, "coordinate_type": 2}
_VALUE_RANGE = {"min": 0, "max": 1}
_CONTENT = {"props_type": 0, "props": 1, "range": 2}
_NORMALIZATION = {"mean": 0, "std": 1}
_THRESHOLDING = {"global_score_threshold": 0}
_PROCESS_UNIT = {"options_type": 0, "options": 1}
_STATS = {"max": 0, "min": 1}
_TENSOR = {"name": 0, "description": 1, "dimension_names": 2, "content": 3,
           "process_units": 4, "stats": 5, "associated_files": 6}
_SUBGRAPH = {"name": 0, "description": 1, "inputs": 2, "outputs": 3}
_MODEL = {"name": 0, "description": 1, "version": 2, "subgraphs": 3, "author": 4,
          "license": 5, "associated_files": 6, "min_parser_version": 7}


@dataclass
class TensorInfo:
    """One input/output tensor's ``TensorMetadata``.

    ``content``: "image" (with ``color_space``, ``size`` = (width, height), ``mean``/``std``),
    "bounding_box" (with ``box_type``, ``coordinate_type``, ``box_index``) or "feature".
    ``content_range``: the dims holding one object (``Content.range``), e.g. (2, 2) for a
    ``[1, P, 4]`` box tensor. ``score_threshold`` adds ``ScoreThresholdingOptions``.
    """

    name: str
    description: str = ""
    content: str = "feature"
    dimension_names: list[str] = field(default_factory=list)
    content_range: tuple[int, int] | None = None
    color_space: str = "RGB"
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    box_type: str = "BOUNDARIES"
    coordinate_type: str = "RATIO"
    box_index: tuple[int, ...] = ()
    score_threshold: float | None = None
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()


@dataclass
class StandardMetadata:
    """``ModelMetadata`` with one subgraph."""

    name: str
    description: str
    version: str
    author: str
    license: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    subgraph_name: str = ""
    subgraph_description: str = ""


def _flatbuffers() -> Any:
    return require("flatbuffers", "tflite")


# ---------------------------------------------------------------------------- writer


def _vector(b: Any, kind: str, values: list[Any]) -> int:
    """A vector of scalars ("float32", "uint32") or of offsets ("offset")."""
    if kind == "offset":
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependUOffsetTRelative(v)
        return b.EndVector()
    return b.CreateNumpyVector(np.asarray(values, dtype=kind))


def _table(b: Any, n_slots: int, fields: list[tuple[str, int, Any]]) -> int:
    """A table from ``(kind, slot, value)``; kinds: offset, uint8, int8, uint32, int32,
    float32. None values are left out (the schema default)."""
    adders = {"offset": b.PrependUOffsetTRelativeSlot, "uint8": b.PrependUint8Slot,
              "int8": b.PrependInt8Slot, "uint32": b.PrependUint32Slot,
              "int32": b.PrependInt32Slot, "float32": b.PrependFloat32Slot}
    b.StartObject(n_slots)
    for kind, slot, value in fields:
        if value is not None:
            adders[kind](slot, value, 0)
    return b.EndObject()


def _string(b: Any, text: str | None) -> int | None:
    return b.CreateString(text) if text else None


def _content(b: Any, t: TensorInfo) -> int:
    if t.content == "image":
        size = None
        if t.size is not None:
            size = _table(b, 2, [("uint32", _IMAGE_SIZE["width"], int(t.size[0])),
                                 ("uint32", _IMAGE_SIZE["height"], int(t.size[1]))])
        props = _table(b, 2, [("int8", _IMAGE_PROPS["color_space"],
                                COLOR_SPACES[t.color_space]),
                               ("offset", _IMAGE_PROPS["default_size"], size)])
    elif t.content == "bounding_box":
        index = _vector(b, "uint32", list(t.box_index)) if t.box_index else None
        props = _table(b, 3, [("offset", _BOX_PROPS["index"], index),
                              ("int8", _BOX_PROPS["type"], BOX_TYPES[t.box_type]),
                              ("int8", _BOX_PROPS["coordinate_type"],
                               COORDINATE_TYPES[t.coordinate_type])])
    elif t.content == "feature":
        props = _table(b, 0, [])
    else:
        raise FFEdgeError(f"unknown tensor content {t.content!r}")
    rng = None
    if t.content_range is not None:
        rng = _table(b, 2, [("int32", _VALUE_RANGE["min"], int(t.content_range[0])),
                            ("int32", _VALUE_RANGE["max"], int(t.content_range[1]))])
    return _table(b, 3, [("uint8", _CONTENT["props_type"], CONTENT_TAGS[t.content]),
                         ("offset", _CONTENT["props"], props),
                         ("offset", _CONTENT["range"], rng)])


def _process_units(b: Any, t: TensorInfo) -> int | None:
    units = []
    if t.mean or t.std:
        mean = _vector(b, "float32", list(t.mean))
        std = _vector(b, "float32", list(t.std))
        opts = _table(b, 2, [("offset", _NORMALIZATION["mean"], mean),
                             ("offset", _NORMALIZATION["std"], std)])
        units.append(_table(b, 2, [("uint8", _PROCESS_UNIT["options_type"],
                                    PROCESS_TAGS["normalization"]),
                                   ("offset", _PROCESS_UNIT["options"], opts)]))
    if t.score_threshold is not None:
        opts = _table(b, 1, [("float32", _THRESHOLDING["global_score_threshold"],
                              float(t.score_threshold))])
        units.append(_table(b, 2, [("uint8", _PROCESS_UNIT["options_type"],
                                    PROCESS_TAGS["score_thresholding"]),
                                   ("offset", _PROCESS_UNIT["options"], opts)]))
    return _vector(b, "offset", units) if units else None


def _tensor(b: Any, t: TensorInfo) -> int:
    name, desc = _string(b, t.name), _string(b, t.description)
    dims = None
    if t.dimension_names:
        dims = _vector(b, "offset", [b.CreateString(d) for d in t.dimension_names])
    content = _content(b, t)
    units = _process_units(b, t)
    stats = None
    if t.stats_min or t.stats_max:
        hi = _vector(b, "float32", list(t.stats_max)) if t.stats_max else None
        lo = _vector(b, "float32", list(t.stats_min)) if t.stats_min else None
        stats = _table(b, 2, [("offset", _STATS["max"], hi), ("offset", _STATS["min"], lo)])
    return _table(b, 7, [("offset", _TENSOR["name"], name),
                         ("offset", _TENSOR["description"], desc),
                         ("offset", _TENSOR["dimension_names"], dims),
                         ("offset", _TENSOR["content"], content),
                         ("offset", _TENSOR["process_units"], units),
                         ("offset", _TENSOR["stats"], stats)])


def build_metadata_buffer(meta: StandardMetadata) -> bytes:
    """``meta`` as a ``ModelMetadata`` flatbuffer with file identifier ``M001``."""
    b = _flatbuffers().Builder(1024)
    inputs = _vector(b, "offset", [_tensor(b, t) for t in meta.inputs])
    outputs = _vector(b, "offset", [_tensor(b, t) for t in meta.outputs])
    sg_name, sg_desc = _string(b, meta.subgraph_name), _string(b, meta.subgraph_description)
    subgraph = _table(b, 4, [("offset", _SUBGRAPH["name"], sg_name),
                             ("offset", _SUBGRAPH["description"], sg_desc),
                             ("offset", _SUBGRAPH["inputs"], inputs),
                             ("offset", _SUBGRAPH["outputs"], outputs)])
    subgraphs = _vector(b, "offset", [subgraph])
    strings = {k: _string(b, getattr(meta, k))
               for k in ("name", "description", "version", "author", "license")}
    parser = b.CreateString(MIN_PARSER_VERSION)
    root = _table(b, 8, [("offset", _MODEL["name"], strings["name"]),
                         ("offset", _MODEL["description"], strings["description"]),
                         ("offset", _MODEL["version"], strings["version"]),
                         ("offset", _MODEL["subgraphs"], subgraphs),
                         ("offset", _MODEL["author"], strings["author"]),
                         ("offset", _MODEL["license"], strings["license"]),
                         ("offset", _MODEL["min_parser_version"], parser)])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# ---------------------------------------------------------------------------- reader


class _T:
    """A flatbuffers table read through the generic ``Table`` API, by slot number."""

    def __init__(self, buf: bytes, pos: int) -> None:
        fb = _flatbuffers()
        self._fb = fb
        self.t = fb.table.Table(bytearray(buf) if isinstance(buf, bytes) else buf, pos)

    def _off(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def scalar(self, slot: int, flags: Any, default: Any = 0) -> Any:
        o = self._off(slot)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def table(self, slot: int) -> _T | None:
        o = self._off(slot)
        if not o:
            return None
        sub = _T.__new__(_T)
        sub._fb, sub.t = self._fb, self._fb.table.Table(self.t.Bytes,
                                                        self.t.Indirect(o + self.t.Pos))
        return sub

    def tables(self, slot: int) -> list[_T]:
        o = self._off(slot)
        if not o:
            return []
        start, out = self.t.Vector(o), []
        for i in range(self.t.VectorLen(o)):
            sub = _T.__new__(_T)
            sub._fb = self._fb
            sub.t = self._fb.table.Table(self.t.Bytes, self.t.Indirect(start + 4 * i))
            out.append(sub)
        return out

    def strings(self, slot: int) -> list[str]:
        o = self._off(slot)
        if not o:
            return []
        start = self.t.Vector(o)
        return [self.t.String(start + 4 * i).decode("utf-8") for i in range(self.t.VectorLen(o))]

    def numbers(self, slot: int, flags: Any) -> list[float]:
        o = self._off(slot)
        return self.t.GetVectorAsNumpy(flags, o).tolist() if o else []


def _read_content(c: _T) -> dict[str, Any]:
    n = _flatbuffers().number_types
    tag = c.scalar(_CONTENT["props_type"], n.Uint8Flags)
    kind = {v: k for k, v in CONTENT_TAGS.items()}.get(tag, f"tag {tag}")
    out: dict[str, Any] = {"type": kind}
    props = c.table(_CONTENT["props"])
    if kind == "image" and props is not None:
        cs = props.scalar(_IMAGE_PROPS["color_space"], n.Int8Flags)
        out["color_space"] = {v: k for k, v in COLOR_SPACES.items()}.get(cs, cs)
        size = props.table(_IMAGE_PROPS["default_size"])
        if size is not None:
            out["default_size"] = {k: size.scalar(s, n.Uint32Flags)
                                   for k, s in _IMAGE_SIZE.items()}
    elif kind == "bounding_box" and props is not None:
        out["index"] = props.numbers(_BOX_PROPS["index"], n.Uint32Flags)
        out["box_type"] = {v: k for k, v in BOX_TYPES.items()}.get(
            props.scalar(_BOX_PROPS["type"], n.Int8Flags))
        out["coordinate_type"] = {v: k for k, v in COORDINATE_TYPES.items()}.get(
            props.scalar(_BOX_PROPS["coordinate_type"], n.Int8Flags))
    rng = c.table(_CONTENT["range"])
    if rng is not None:
        out["range"] = [rng.scalar(_VALUE_RANGE["min"], n.Int32Flags),
                        rng.scalar(_VALUE_RANGE["max"], n.Int32Flags)]
    return out


def _read_tensor(t: _T) -> dict[str, Any]:
    n = _flatbuffers().number_types
    out: dict[str, Any] = {"name": t.string(_TENSOR["name"]),
                           "description": t.string(_TENSOR["description"]),
                           "dimension_names": t.strings(_TENSOR["dimension_names"])}
    content = t.table(_TENSOR["content"])
    if content is not None:
        out["content"] = _read_content(content)
    for unit in t.tables(_TENSOR["process_units"]):
        tag = unit.scalar(_PROCESS_UNIT["options_type"], n.Uint8Flags)
        opts = unit.table(_PROCESS_UNIT["options"])
        if tag == PROCESS_TAGS["normalization"] and opts is not None:
            out["normalization"] = {k: opts.numbers(s, n.Float32Flags)
                                    for k, s in _NORMALIZATION.items()}
        elif tag == PROCESS_TAGS["score_thresholding"] and opts is not None:
            out["score_threshold"] = opts.scalar(_THRESHOLDING["global_score_threshold"],
                                                 n.Float32Flags, 0.0)
    stats = t.table(_TENSOR["stats"])
    if stats is not None:
        out["stats"] = {k: stats.numbers(s, n.Float32Flags) for k, s in _STATS.items()}
    return out


def parse_metadata_buffer(buf: bytes) -> dict[str, Any]:
    """A ``ModelMetadata`` flatbuffer -> plain dict (names as in the schema)."""
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise FFEdgeError("not a TFLite ModelMetadata buffer (file identifier is not M001)")
    root = _T(bytes(buf), int.from_bytes(bytes(buf[:4]), "little"))
    out: dict[str, Any] = {k: root.string(s) for k, s in _MODEL.items()
                           if k not in ("subgraphs", "associated_files")}
    out["subgraph_metadata"] = []
    for sg in root.tables(_MODEL["subgraphs"]):
        out["subgraph_metadata"].append({
            "name": sg.string(_SUBGRAPH["name"]),
            "description": sg.string(_SUBGRAPH["description"]),
            "input_tensor_metadata": [_read_tensor(t) for t in sg.tables(_SUBGRAPH["inputs"])],
            "output_tensor_metadata": [_read_tensor(t)
                                       for t in sg.tables(_SUBGRAPH["outputs"])]})
    return out


# ------------------------------------------------------------------ in a .tflite file


def _schema() -> Any:
    return require("ai_edge_litert.schema_py_generated", "tflite")


def _name(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def metadata_buffer(tflite_bytes: bytes, name: str = METADATA_NAME) -> bytes | None:
    """The raw buffer of the ``Model.metadata`` entry ``name``, or None (lazy read)."""
    try:
        model = _schema().Model.GetRootAs(tflite_bytes, 0)
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            if _name(md.Name()) == name:
                raw = model.Buffers(md.Buffer()).DataAsNumpy()
                return None if isinstance(raw, int) else raw.tobytes()
    except (ValueError, IndexError, TypeError):
        return None
    return None


def with_standard_metadata(tflite_bytes: bytes, meta: StandardMetadata) -> bytes:
    """``tflite_bytes`` with ``meta`` stored as ``TFLITE_METADATA`` (replacing an older
    entry); every other buffer and metadata entry is kept."""
    from ffedge.artifact.tflite_pack import pack_model, read_model

    fb = _schema()
    payload = build_metadata_buffer(meta)
    model = read_model(tflite_bytes)
    old = [m for m in (model.metadata or []) if _name(m.name) == METADATA_NAME]
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    buf = fb.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8)
    if old:  # reuse the old slot: no orphaned buffer
        model.buffers[old[0].buffer] = buf
        index = old[0].buffer
    else:
        model.buffers.append(buf)
        index = len(model.buffers) - 1
    entry = fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = index
    model.metadata.append(entry)
    return pack_model(model)


def read_standard_metadata(tflite_bytes: bytes) -> dict[str, Any] | None:
    """The ``TFLITE_METADATA`` of a ``.tflite`` as a dict, or None when absent."""
    raw = metadata_buffer(tflite_bytes)
    return None if raw is None else parse_metadata_buffer(raw)


# ------------------------------------------------------------ from our artifact metadata

LICENSE = "MIT (featherface-edge); model weights: see the checkpoint's licence"
AUTHOR = "featherface-edge"
#: Recommended face threshold, written as ScoreThresholdingOptions on the scores output.
SCORE_THRESHOLD = 0.5


def _image_input(meta: Any, h: int, w: int) -> TensorInfo:
    spec = meta.spec
    rgb = spec.channel_order == "RGB"
    desc = (f"{'RGB' if rgb else 'BGR'} image, NHWC [1, {h}, {w}, 3], float32 pixel values "
            f"0-255 minus mean {list(spec.mean)} divided by std {list(spec.std)}, per channel "
            f"in {spec.channel_order} order; letterboxed (scale to fit, top-left aligned, pad "
            "bottom/right with raw pixel 0).")
    if not rgb:
        desc += (" The channels are BGR: the metadata schema has no BGR colour space, so "
                 "color_space is UNKNOWN and RGB-only pipelines refuse the model instead of "
                 "feeding it swapped channels. Swap R and B before feeding, or re-export "
                 "with the default --channel-order rgb (the flip folded into the first conv).")
    io = meta.extra.get("io", {}).get("input", {})
    if "scale" in io:
        desc += (f" Integer input: q = round(x / {io['scale']:.8g}) + {io['zero_point']} "
                 f"({io['dtype']}).")
    return TensorInfo(INPUT_TENSOR_NAME, desc, "image", ["batch", "height", "width", "channel"],
                      color_space="RGB" if rgb else "UNKNOWN", size=(w, h),
                      mean=tuple(float(v) for v in spec.mean),
                      std=tuple(float(v) for v in spec.std))


INPUT_TENSOR_NAME = "images"


def _outputs(meta: Any, priors: int) -> list[TensorInfo]:
    from ffedge.artifact.metadata import OUTPUT_SEMANTICS

    v0, v1 = meta.spec.priors.variances
    if meta.extra.get("decode_in_graph"):
        sem = meta.extra.get("decoded_outputs", {})
        return [
            TensorInfo("boxes", f"{sem.get('boxes', '')}. {priors} candidates.",
                       "bounding_box", ["batch", "candidate", "coordinate"],
                       content_range=(2, 2), box_type="BOUNDARIES", coordinate_type="RATIO",
                       box_index=(0, 1, 2, 3)),
            TensorInfo("scores", f"{sem.get('scores', '')}: keep > threshold, then NMS "
                       "(IoU 0.4) over boxes.", "feature", ["batch", "candidate"],
                       score_threshold=SCORE_THRESHOLD, stats_min=(0.0,), stats_max=(1.0,)),
            TensorInfo("landmarks", sem.get("landmarks", ""), "feature",
                       ["batch", "candidate", "point_xy"])]
    note = (f" Priors: see the ffedge metadata entry (spec.priors); variances {v0}, {v1}; "
            f"{priors} priors in order level, row, column, anchor.")
    return [
        TensorInfo("boxes", OUTPUT_SEMANTICS["boxes"] + note, "feature",
                   ["batch", "prior", "delta"]),
        TensorInfo("scores", OUTPUT_SEMANTICS["scores"] + "; face = index 1.", "feature",
                   ["batch", "prior", "class"], score_threshold=SCORE_THRESHOLD,
                   stats_min=(0.0,), stats_max=(1.0,)),
        TensorInfo("landmarks", OUTPUT_SEMANTICS["landmarks"], "feature",
                   ["batch", "prior", "delta"])]


def standard_metadata(meta: Any) -> StandardMetadata:
    """The ``TFLITE_METADATA`` for an :class:`~ffedge.artifact.metadata.ArtifactMetadata`.

    Output tensor metadata follows the graph's output order (the contract in
    ``meta.extra["io"]``), as the schema requires."""
    h, w = meta.spec.input_size
    priors = meta.spec.num_priors
    outs = {t.name: t for t in _outputs(meta, priors)}
    order = [d["name"] for d in meta.extra.get("io", {}).get("outputs", [])]
    outputs = [outs[n] for n in order if n in outs] or list(outs.values())
    kind = "decoded boxes" if meta.extra.get("decode_in_graph") else "raw RetinaFace outputs"
    return StandardMetadata(
        name=f"FeatherFace {meta.model} face detector",
        description=(f"FeatherFace {meta.model} ({meta.precision}), {h}x{w} input, {kind}: "
                     "boxes, face scores and five landmarks per prior. Full contract "
                     "(priors, decoding, NMS) in the 'ffedge' metadata entry and "
                     "docs/mobile.md."),
        version=f"{meta.tool_version}; checkpoint sha256 "
                f"{meta.checkpoint_sha256[:16] or 'none (random init)'}",
        author=AUTHOR, license=LICENSE,
        inputs=[_image_input(meta, h, w)], outputs=outputs,
        subgraph_name="serving_default")
