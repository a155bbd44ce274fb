"""Per-op profiles: where an artifact spends its time, and in which precision it ran.

* ONNX Runtime: ``SessionOptions.enable_profiling``; the JSON trace's ``Node`` events give
  node name, op type (``args.op_name``) and duration. Precision follows the kernel:
  ``QLinearConv`` / ``ConvInteger`` / ``MatMulInteger`` / ``QLinear*`` ran int8,
  ``QuantizeLinear`` / ``DequantizeLinear`` are conversion (``q/dq``), the rest float.
* OpenVINO: ``PERF_COUNT`` and ``InferRequest.get_profiling_info()``: node type and the
  kernel that ran (``exec_type`` such as ``jit_avx512_amx_I8`` or ``brgconv_avx512_FP32``);
  the suffix gives the precision.

TFLite (XNNPACK) has no per-op timing in the Python interpreter; :func:`profile_artifact`
says so instead of guessing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffedge.errors import FFEdgeError, require

INT8_ORT_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QLinearAdd",
                "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
                "QLinearAveragePool", "QLinearGlobalAveragePool", "DynamicQuantizeMatMul",
                "QGemm", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere"}
QDQ_ORT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


@dataclass
class OpTime:
    name: str
    op_type: str
    precision: str
    ms: float  # per inference


@dataclass
class ProfileReport:
    runtime: str
    artifact: str
    runs: int
    ops: list[OpTime] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(o.ms for o in self.ops)

    def by_type(self) -> list[tuple[str, str, int, float]]:
        """(op type, precision, count, ms per inference), slowest first."""
        agg: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
        for o in self.ops:
            agg[(o.op_type, o.precision)][0] += 1
            agg[(o.op_type, o.precision)][1] += o.ms
        rows = [(t, p, c, ms) for (t, p), (c, ms) in agg.items()]
        return sorted(rows, key=lambda r: -r[3])

    def by_precision(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for o in self.ops:
            out[o.precision] += o.ms
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def render(self, top: int = 12) -> str:
        total = self.total_ms or 1e-9
        lines = [f"profile: {self.runtime} {self.artifact}, {self.runs} runs, "
                 f"{self.total_ms:.2f} ms of kernels per inference",
                 "  by precision: " + ", ".join(f"{p} {ms / total:.0%}"
                                                for p, ms in self.by_precision().items())]
        head = f"  {'op type':<28} {'precision':<9} {'count':>5} {'ms':>8} {'share':>6}"
        lines += [head, "  " + "-" * (len(head) - 2)]
        for t, p, c, ms in self.by_type()[:top]:
            lines.append(f"  {t:<28} {p:<9} {c:>5} {ms:>8.3f} {ms / total:>6.1%}")
        lines.append("  slowest nodes:")
        for o in sorted(self.ops, key=lambda o: -o.ms)[:min(top, 8)]:
            lines.append(f"    {o.ms:7.3f} ms {o.precision:<5} {o.op_type:<16} {o.name[:90]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "artifact": self.artifact, "runs": self.runs,
                "total_ms": round(self.total_ms, 4), "by_precision": self.by_precision(),
                "by_type": [{"op_type": t, "precision": p, "count": c, "ms": round(ms, 4)}
                            for t, p, c, ms in self.by_type()]}


def ort_precision(op_type: str) -> str:
    if op_type in INT8_ORT_OPS:
        return "int8"
    if op_type in QDQ_ORT_OPS:
        return "q/dq"
    return "fp32"


def parse_ort_trace(events: list[dict], runs: int) -> list[OpTime]:
    """Node kernel events of an ORT profile -> per-node ms per inference."""
    total: dict[str, list] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        total.setdefault(name, [op, 0.0])[1] += float(e.get("dur", 0)) / 1000.0
    return [OpTime(n, op, ort_precision(op), ms / max(runs, 1)) for n, (op, ms) in total.items()]


def profile_onnxruntime(path: str | Path, x: np.ndarray, threads: int | None = 2, runs: int = 10,
                        warmup: int = 2) -> ProfileReport:
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory(prefix="ffprof-") as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(warmup):
            sess.run(None, feed)
        for _ in range(runs):
            sess.run(None, feed)
        trace = sess.end_profiling()
        events = json.loads(Path(trace).read_text())
    # the trace holds the warm-up runs too (same events per run): drop them by count
    events = [e for e in events if e.get("cat") == "Node"]
    events = events[len(events) // (runs + warmup) * warmup:]
    return ProfileReport("onnxruntime", Path(path).name, runs, parse_ort_trace(events, runs))


_OV_PREC = re.compile(r"_(I8|U8|FP32|F32|BF16|FP16|F16|I32|I64)$", re.IGNORECASE)


def ov_precision(exec_type: str) -> str:
    m = _OV_PREC.search(exec_type or "")
    if not m:
        return "-"
    p = m.group(1).upper()
    return {"I8": "int8", "U8": "int8", "F32": "fp32", "FP32": "fp32", "BF16": "bf16",
            "F16": "fp16", "FP16": "fp16"}.get(p, p.lower())


def profile_openvino(path: str | Path, x: np.ndarray, threads: int | None = 2, runs: int = 10,
                     warmup: int = 2, inference_precision: str | None = "f32") -> ProfileReport:
    ov = require("openvino", "openvino")
    core = ov.Core()
    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if inference_precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    req = compiled.create_infer_request()
    for _ in range(warmup):
        req.infer({0: x})
    acc: dict[str, list] = {}
    for _ in range(runs):
        req.infer({0: x})
        for info in req.get_profiling_info():
            if str(info.status).endswith("NOT_RUN"):
                continue
            ms = info.real_time.total_seconds() * 1000.0
            row = acc.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0])
            row[2] += ms
    ops = [OpTime(n, t, ov_precision(e), ms / runs) for n, (t, e, ms) in acc.items()]
    return ProfileReport("openvino", Path(path).name, runs, ops)


def profile_artifact(path: str | Path, x: np.ndarray, threads: int | None = 2,
                     runs: int = 10) -> ProfileReport:
    """Profile by file type: ``.onnx`` (ONNX Runtime) or ``.xml`` (OpenVINO)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return profile_onnxruntime(path, x, threads, runs)
    if suffix == ".xml":
        return profile_openvino(path, x, threads, runs)
    raise FFEdgeError(f"--profile supports .onnx (onnxruntime) and .xml (OpenVINO) artifacts, "
                      f"not {Path(path).name}: the TFLite interpreter exposes no per-op timing")


def profile_runner(runner, image: np.ndarray, threads: int | None = 2, runs: int = 10
                   ) -> ProfileReport:
    """Profile the artifact behind ``runner`` on one BGR image (preprocessed with its spec)."""
    from ffedge.decoder.transform import preprocess

    path = runner.info.path
    if path is None:
        raise FFEdgeError("--profile needs an artifact (.onnx or .xml): pass --runtime "
                          "onnxruntime|openvino or --artifact PATH")
    x, _ = preprocess(image, runner.spec)
    return profile_artifact(path, np.ascontiguousarray(x[None], dtype=np.float32), threads, runs)
