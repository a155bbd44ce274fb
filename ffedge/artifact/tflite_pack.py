"""Serialise a TFLite model object (``ai_edge_litert.schema_py_generated`` object API)
with identical vectors, strings and tables written once.

The schema's own ``Pack`` writes every vector and table anew. On nano_b INT8 that is
~60 KB of repeats: each per-channel tensor carries an all-zero int64 zero-point vector
(8 bytes a channel; 6,445 of them), thousands of equal shape vectors, equal quantisation
tables of tensors that share a scale (transposes, reshapes), equal op options, and ~9 KB
of constant buffers with equal bytes. A flatbuffer may point any number of offsets at one
object (the format is a DAG; the verifier only checks bounds and alignment), so sharing is
lossless: the interpreter reads exactly the same values.

Only tables whose identity does not matter are shared (quantisation params, options,
operator codes, signature entries, ...); ``Model``, ``SubGraph``, ``Tensor``, ``Operator``
and ``Buffer`` keep one table each (indices address them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ffedge.errors import require

_TFLITE_IDENTIFIER = b"TFL3"
_NEVER_SHARED = {"ModelT", "SubGraphT", "OperatorT", "TensorT", "BufferT"}


def _schema() -> Any:
    return require("ai_edge_litert.schema_py_generated", "tflite")


def _builder_class() -> type:
    fb = require("flatbuffers", "tflite")

    class SharingBuilder(fb.Builder):  # type: ignore[misc, name-defined]
        """A Builder that returns the earlier offset for an identical vector or string.

        Earlier objects lie at higher addresses (the buffer grows towards the front), so
        a later table always points forward to them, as flatbuffers requires."""

        def __init__(self, size: int) -> None:
            super().__init__(size)
            self.memo: dict[Any, int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers API)
            key = ("v", x.dtype.str, x.size, x.tobytes())
            if key not in self.memo:
                self.memo[key] = super().CreateNumpyVector(x)
            return self.memo[key]

        def CreateString(self, s: Any, encoding: str = "utf-8",  # noqa: N802
                         errors: str = "strict") -> int:
            key = ("s", s if isinstance(s, bytes) else s.encode(encoding, errors))
            if key not in self.memo:
                self.memo[key] = super().CreateString(s, encoding, errors)
            return self.memo[key]

    return SharingBuilder


def _content_key(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return ("nd", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, (list, tuple)):
        return tuple(_content_key(v) for v in obj)
    if hasattr(obj, "Pack"):
        return (type(obj).__name__,) + tuple((k, _content_key(v))
                                             for k, v in sorted(vars(obj).items()))
    return obj


@contextlib.contextmanager
def _shared_tables(schema: Any) -> Iterator[None]:
    """Patch the object API's ``Pack`` so equal tables are written once per builder."""
    saved: dict[type, Any] = {}
    for name, cls in vars(schema).items():
        if (isinstance(cls, type) and name.endswith("T") and name not in _NEVER_SHARED
                and hasattr(cls, "Pack")):
            saved[cls] = cls.Pack

            def pack(self: Any, builder: Any, _orig: Any = cls.Pack) -> int:
                memo = getattr(builder, "memo", None)
                if memo is None:
                    return _orig(self, builder)
                key = ("t", _content_key(self))
                if key not in memo:
                    memo[key] = _orig(self, builder)
                return memo[key]

            cls.Pack = pack
    try:
        yield
    finally:
        for cls, orig in saved.items():
            cls.Pack = orig


def _as_arrays(model: Any) -> None:
    """Int lists (shapes, op inputs/outputs) as int32 arrays: the object API packs arrays
    through ``CreateNumpyVector``, where equal ones are shared; lists it writes anew."""
    def arr(v: Any) -> Any:
        return np.asarray(v, dtype=np.int32) if isinstance(v, list) else v

    for sg in model.subgraphs or []:
        sg.inputs, sg.outputs = arr(sg.inputs), arr(sg.outputs)
        for t in sg.tensors or []:
            t.shape, t.shapeSignature = arr(t.shape), arr(t.shapeSignature)
        for op in sg.operators or []:
            op.inputs, op.outputs = arr(op.inputs), arr(op.outputs)


def pack_model(model: Any) -> bytes:
    """A ``ModelT`` -> ``.tflite`` bytes, with repeats shared (see the module docstring).

    ``model`` is modified (int lists become int32 arrays)."""
    schema = _schema()
    _as_arrays(model)
    builder = _builder_class()(1 << 16)
    with _shared_tables(schema):
        root = model.Pack(builder)
    builder.Finish(root, file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def read_model(data: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils as fu

    return fu.read_model_from_bytearray(bytearray(data))
