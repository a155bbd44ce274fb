"""Measured INT8 sensitivity: which nodes to keep in float, found in a handful of builds.

One pass runs the float graph and the fully quantised QDQ graph on the same held-out
inputs with every intermediate tensor exposed, and measures, per tensor, the error the
quantised graph carries (noise-to-signal ratio, averaged over channels so that one
outlier channel cannot hide the damage done to all the others). Each node is charged
with the error it adds:

* its own arithmetic (int8 weights): error of its float output minus the worst error of
  its inputs;
* every activation tensor it quantises: the jump from the tensor before ``QuantizeLinear``
  to after ``DequantizeLinear``. ORT puts that Q/DQ pair on a tensor when its producer or
  any consumer is quantised, so the jump is charged to all of them: they rise together in
  the ranking and leave float together.

:class:`SensitivitySearch` then keeps the fewest top-ranked nodes in float that pass the
fidelity gate: doubling k until the gate passes, then bisecting (about 2·log2(k) builds
instead of the dozens a scope-by-scope search needs). Its ``run()`` has the shape of
:class:`~ffedge.export.fidelity.FallbackSearch`: node names to keep float, or None.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffedge.errors import require
from ffedge.export.ort_probe import session_with_outputs

SKIP_TYPES = ("QuantizeLinear", "DequantizeLinear", "Constant", "Identity", "Shape")
# nodes the ORT QDQ quantiser never excludes usefully (DeformConv: weight-only int8 elsewhere)
NOT_CANDIDATES = ("DeformConv",)


@dataclass
class NodeSensitivity:
    name: str
    op_type: str
    score: float  # noise-to-signal ratio added (linear, channel-averaged)
    cause: str  # "weights" or the tensor whose Q/DQ hurts most

    def to_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "score": round(self.score, 6),
                "cause": self.cause}


def _qdq_maps(qproto) -> tuple[dict[str, str], set[str]]:
    """tensor -> its DequantizeLinear output (activation Q/DQ pairs); names of initializers."""
    inits = {i.name for i in qproto.graph.initializer}
    q_of = {n.input[0]: n.output[0] for n in qproto.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in qproto.graph.node if n.op_type == "DequantizeLinear"}
    post = {t: dq_of[q] for t, q in q_of.items() if q in dq_of and t not in inits}
    return post, inits


def _folded_activations(fproto, qproto) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Tensors whose Relu the QDQ quantiser folded into the following Q/DQ (ORT removes a
    Relu/Clip after a quantised op: the op before it now writes the tensor and
    QuantizeLinear's range, starting at 0, does the clamp), mapped to ``max(x, 0)``.
    Without it the measured "noise" of such a tensor is the Relu itself (V1 and ECA-CBAM
    SSH outputs: noise-to-signal 0.2-0.45, against <= 2.5e-3 for real quantisation noise),
    which put the SSH concats at the top of the ranking. Found either by the float graph
    (``fproto`` has a Relu/Clip where ``qproto`` has none) or, when only the QDQ graph is
    known, by a uint8 zero point at 0 (the range starts at 0: a non-negative tensor, for
    which the clamp changes nothing, or a folded Relu)."""
    from onnx import numpy_helper

    qprod = {o: n.op_type for n in qproto.graph.node for o in n.output}
    inits = {i.name: i for i in qproto.graph.initializer}
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for n in fproto.graph.node:
        if n.op_type in ("Relu", "Clip") and n.output and qprod.get(n.output[0]) != n.op_type:
            out[n.output[0]] = _relu
    for n in qproto.graph.node:
        zp = inits.get(n.input[2]) if n.op_type == "QuantizeLinear" and len(n.input) > 2 else None
        if zp is not None and zp.data_type == 2 and not numpy_helper.to_array(zp).any():
            out[n.input[0]] = _relu  # uint8, zero point 0
    return out


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def measure_tensor_noise(fproto, qproto, feeds: Sequence[dict[str, np.ndarray]]
                         ) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Run the QDQ graph once per feed with its activation tensors exposed. Returns
    (per-element variance each tensor's Q/DQ pair adds, per-element power of each float
    tensor, tensor -> its DequantizeLinear output)."""
    post, _ = _qdq_maps(qproto)
    fnames = {o for n in fproto.graph.node for o in n.output}
    tensors = sorted(t for t in fnames if t in post)
    folded = _folded_activations(fproto, qproto)
    outputs = sorted(fnames & {o for n in qproto.graph.node for o in n.output
                               if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Constant")})
    sess = session_with_outputs(qproto, sorted(set(outputs) | {post[t] for t in tensors}))
    err: dict[str, float] = dict.fromkeys(tensors, 0.0)
    pw: dict[str, float] = {}
    for feed in feeds:
        vals = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        for t in outputs:
            v = vals.get(t)
            if v is not None and v.dtype == np.float32 and v.size:
                pw[t] = pw.get(t, 0.0) + float(np.mean(np.square(v, dtype=np.float64)))
        for t in tensors:
            a, b = vals.get(t), vals.get(post[t])
            if a is not None and t in folded:
                a = folded[t](a)
            if a is not None and b is not None and a.shape == b.shape and a.size:
                err[t] += float(np.mean(np.square(b.astype(np.float64) - a)))
        del vals
    n = max(1, len(feeds))
    return {t: e / n for t, e in err.items()}, {t: v / n for t, v in pw.items()}, post


def _join(parts: list[str]) -> str:
    path = ""
    prev = ""
    for part in parts:
        if prev and part.startswith(prev + "."):
            path += part[len(prev):]  # "stage1" then "stage1.0": append ".0"
        else:
            path += ("." if path else "") + part
        prev = part
    return path


def output_gains(module, inputs: Sequence[np.ndarray], probes: int = 1, seed: int = 0
                 ) -> dict[str, float]:
    """How strongly noise at each module's output reaches the outputs, per element:
    ``||D·J||_F^2 / numel`` by Hutchinson's estimator (random output directions, one
    backward pass each), where D scales each output by 1/||output|| so that gain × noise
    variance estimates the output noise-to-signal ratio it causes. ``module`` returns the
    deployed outputs (``DeployWrapper``); keys are module paths as in ONNX scopes."""
    import torch

    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                captured[name] = out
        hooks.append(sub.register_forward_hook(hook))
    sums: dict[str, float] = {}
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.enable_grad():
            for x in inputs:
                captured.clear()
                xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
                outs = module(xt)
                names = list(captured)
                for _ in range(probes):
                    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() / (o.detach().norm() + 1e-12)
                               for o in outs)
                    grads = torch.autograd.grad(loss, [captured[n] for n in names], retain_graph=True,
                                                allow_unused=True)
                    for n, g in zip(names, grads):
                        if g is not None:
                            sums[n] = sums.get(n, 0.0) + float((g * g).sum())
    finally:
        for h in hooks:
            h.remove()
    count = max(1, len(inputs) * probes)
    return {n: v / count for n, v in sums.items()}


def _gain_of(node_name: str, gains: dict[str, float] | None) -> float:
    """The gain of the innermost module that holds ``node_name`` (1.0 without gains)."""
    if not gains:
        return 1.0
    path = _join([p for p in node_name.split("/") if p][:-1])
    while path:
        if path in gains:
            return gains[path]
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return 1.0


def _weight_rel_error(w: np.ndarray) -> float:
    """Relative error power of int8 symmetric per-output-channel rounding of ``w``."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    scale = np.abs(flat).max(axis=1) / 127.0
    err = (scale ** 2 / 12.0) * flat.shape[1]
    return float(err.sum() / max((flat * flat).sum(), 1e-20))


def rank_nodes(fp32_path: str | Path, qdq_path: str | Path,
               feeds: Sequence[dict[str, np.ndarray]],
               gains: dict[str, float] | None = None) -> list[NodeSensitivity]:
    """Nodes of ``fp32_path`` ranked by the output error their quantisation adds, worst
    first. Each Q/DQ'd tensor's measured noise (per element) times the gain from that
    tensor to the outputs (:func:`output_gains`; 1 without) is charged to its producer and
    its consumers; int8 weights add their rounding noise. Only nodes the quantiser
    touched are ranked."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    fproto, qproto = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    noise, power, post = measure_tensor_noise(fproto, qproto, feeds)
    producer = {o: n.name for n in fproto.graph.node for o in n.output}
    weights = {i.name: numpy_helper.to_array(i) for i in fproto.graph.initializer}
    _, qinits = _qdq_maps(qproto)
    q_weight_nodes = {n.name for n in qproto.graph.node
                      if any(i.endswith("_DequantizeLinear_Output") or i in qinits for i in n.input[1:2])}
    fnames = {n.name for n in fproto.graph.node}
    tensor_cost = {t: noise[t] * _gain_of(producer.get(t, ""), gains) for t in noise}
    ranked = []
    for node in fproto.graph.node:
        if node.name not in fnames or node.op_type in SKIP_TYPES + NOT_CANDIDATES:
            continue
        causes = [(tensor_cost[t], t) for t in list(node.input) + list(node.output) if t in tensor_cost]
        w = node.input[1] if len(node.input) > 1 else ""
        if w in weights and weights[w].ndim >= 2 and node.name in q_weight_nodes:
            var = _weight_rel_error(weights[w]) * max((power.get(o, 0.0) for o in node.output), default=0.0)
            causes.append((var * _gain_of(node.name, gains), "weights"))
        if not causes:
            continue
        ranked.append(NodeSensitivity(node.name, node.op_type, sum(c for c, _ in causes),
                                      max(causes)[1]))
    ranked.sort(key=lambda s: -s.score)
    return ranked


@dataclass
class SensitivitySearch:
    """The fewest top-ranked nodes to keep float so the gate passes.

    ``build(excluded) -> Runner`` quantises with those nodes in float; the F1 against
    ``reference`` on ``batches`` decides (reference outputs computed once). Or pass
    ``score(excluded) -> float`` directly (any backend, tests). ``ranked``: node names,
    worst first (:func:`rank_nodes`). ``expand`` maps the chosen names to the names the
    backend understands (e.g. OpenVINO friendly names); identity by default.
    """

    ranked: list[str]
    min_f1: float
    build: Callable | None = None
    reference: object | None = None
    batches: list = field(default_factory=list)
    score: Callable[[list[str]], float] | None = None
    max_builds: int = 16
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    trials: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)
    _cache: dict = field(default_factory=dict)
    _ref_outputs: list | None = None

    def f1(self, k: int) -> float:
        k = max(0, min(k, len(self.ranked)))
        if k not in self._cache:
            self.trials += 1
            self._cache[k] = self._measure(self.ranked[:k])
            self.history.append((k, self._cache[k]))
            self.log(f"  sensitivity search: {k} nodes kept -> F1 {self._cache[k]:.4f}")
        return self._cache[k]

    def seed(self, k: int, runner) -> float:
        """Measure an already built ``runner`` as the result for ``k`` (no build)."""
        self._cache[k] = self._measure(self.ranked[:k], runner)
        self.history.append((k, self._cache[k]))
        self.log(f"  sensitivity search: {k} nodes kept -> F1 {self._cache[k]:.4f}")
        return self._cache[k]

    def _measure(self, excluded: list[str], runner=None) -> float:
        if self.score is not None and runner is None:
            return float(self.score(excluded))
        from ffedge.export.verify import parity_decoder
        from ffedge.runtimes.compare import Comparator

        assert self.build is not None and self.reference is not None
        if self._ref_outputs is None:
            self._ref_outputs = [self.reference.infer(x) for x, _ in self.batches]
        comparator = Comparator(self.reference, parity_decoder(self.reference.spec))
        runner = runner if runner is not None else self.build(excluded)
        rep = comparator.run([runner], self.batches, self._ref_outputs)[0]
        return rep.detections.f1

    def run(self) -> list[str] | None:
        """Node names to keep in float (a prefix of ``ranked``), or None when even all of
        them in float (or the build budget) does not pass."""
        if self.f1(0) >= self.min_f1:
            return []
        lo, hi = 0, None  # lo fails; hi passes
        k = 1
        while hi is None:
            k = min(k, len(self.ranked))
            if self.f1(k) >= self.min_f1:
                hi = k
            elif k >= len(self.ranked) or self.trials >= self.max_builds:
                return None
            else:
                lo, k = k, k * 2
        while hi - lo > 1 and self.trials < self.max_builds:
            mid = (lo + hi) // 2
            if self.f1(mid) >= self.min_f1:
                hi = mid
            else:
                lo = mid
        return self.ranked[:hi]


def feeds_from_batches(batches, input_name: str = "images", limit: int = 8) -> list[dict]:
    """ORT feeds from gate batches ``[(nchw, transforms), ...]`` (the first ``limit``)."""
    return [{input_name: np.ascontiguousarray(x, dtype=np.float32)} for x, _ in batches[:limit]]


def sensitivity_fallback(build, names, reference, probe_batches, min_f1, log=None):
    """A fallback strategy with the pipeline's signature
    ``(build, names, reference, probe_batches, min_f1) -> (node names or None, trials)``.

    Builds the fully quantised model once; when it is an ONNX QDQ file, ranks its nodes
    (:func:`rank_nodes`, gains from the torch reference at half resolution) and bisects
    over the ranking. Other backends (an OpenVINO IR) get the hierarchical search."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    full = build([])
    path = getattr(full.info, "path", None)
    if path is None or Path(path).suffix.lower() != ".onnx":
        from ffedge.export.fidelity import FallbackSearch

        search = FallbackSearch(build, names, reference, probe_batches, min_f1, log=log)
        return search.run(), search.trials
    keep = set(names)
    sens = [r for r in _sensitivities(path, reference, feeds_from_batches(probe_batches, limit=4))
            if r.name in keep]
    log(f"  sensitivity: {len(sens)} nodes ranked; worst: "
        + ", ".join(r.name.rsplit("/", 2)[-2] for r in sens[:4]))
    orders = [[r.name for r in sens], [r.name for r in by_scope(sens)]]
    if orders[1] == orders[0]:
        orders.pop()
    trials = 1
    for i, ranked in enumerate(orders):
        last = i == len(orders) - 1
        if i:
            log("  sensitivity: node order needs more than "
                f"{2 ** (NODE_ORDER_BUILDS - 1)} nodes; searching whole module scopes")
        search = SensitivitySearch(ranked, min_f1, build=build, reference=reference,
                                   batches=probe_batches, log=log,
                                   max_builds=16 if last else NODE_ORDER_BUILDS)
        search.seed(0, full)  # the fully quantised build is measured, not rebuilt
        found = search.run()
        trials += search.trials
        if found is not None:
            return found, trials
    return None, trials


NODE_ORDER_BUILDS = 5  # node order first, up to 16 nodes (V1: 4), then the scope order


def _sensitivities(path, reference, feeds: list[dict]) -> list[NodeSensitivity]:
    gains = None
    if getattr(reference, "module", None) is not None:
        from ffedge.export.wrapper import DeployWrapper

        reference.activate()
        half = [f["images"][:, :, ::2, ::2] for f in feeds[:1]]
        gains = output_gains(DeployWrapper(reference.module).eval(), half)
    return rank_nodes(path, path, feeds, gains)


def rank_qdq(path, reference, feeds: list[dict], names) -> list[str]:
    """``names`` that the QDQ model at ``path`` quantises, worst first (:func:`rank_nodes`,
    gains from the torch ``reference`` at half resolution when it holds a module)."""
    keep = set(names)
    return [r.name for r in _sensitivities(path, reference, feeds) if r.name in keep]


SCOPE_DEPTH = 3  # "/model/body/stage1", "/model/ssh1", "/model/ca_p3/conv_transform_1"


def by_scope(ranked: list[NodeSensitivity], depth: int = SCOPE_DEPTH) -> list[NodeSensitivity]:
    """``ranked`` regrouped by module scope (the first ``depth`` path parts of the node
    name): scopes ordered by their summed score, nodes inside a scope kept in rank order.

    The per-node estimate is right about where the error comes from (V1, V2-CA, ECA-CBAM:
    the full-resolution ``stage1``) but scatters that scope's nodes through the list
    behind single high-gain nodes (SSH concats, coordinate-attention transforms) that
    change no detection when kept float; F1 on a few held-out photos is too coarse to
    pick single nodes, so prefixes that cover whole scopes pass with far fewer float
    nodes (v2_ca: the node order needed 199 float nodes, 2/99 convs int8; the scope order
    118, 59/99). :func:`sensitivity_fallback` tries the node order first (V1: 4 nodes)."""
    groups: dict[str, list[NodeSensitivity]] = {}
    for r in ranked:
        parts = r.name.split("/")[:-1]
        groups.setdefault("/".join(parts[: depth + 1]), []).append(r)
    order = sorted(groups.values(), key=lambda g: -sum(x.score for x in g))
    return [r for g in order for r in g]


def ranked_fallback(build, names, reference, probe_batches, min_f1, log=None):
    """A fallback strategy for targets whose ``fallback_names`` are already ranked worst
    first (OpenVINO: the ONNX ranking mapped to IR names): doubling + bisection."""
    search = SensitivitySearch(list(names), min_f1, build=build, reference=reference,
                               batches=probe_batches,
                               log=log or (lambda msg: print(msg, file=sys.stderr)))
    return search.run(), search.trials
