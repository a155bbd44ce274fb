"""Bring your own model: any RetinaFace-style detector through the zoo's export pipeline.

The contract a user's ``nn.Module`` follows (the same as :class:`FaceDetector`'s):

- ``forward(images)`` takes ``[B, 3, H, W]`` float32, preprocessed as its
  :class:`~ffedge.spec.DeploymentSpec` says (channel order, mean, std);
- it returns a tuple ``(boxes [B, P, 4], class_scores [B, P, 2], landmarks [B, P, 10])``
  where ``P = spec.priors.num_priors(H, W)``, priors ordered level by level, then row,
  column and anchor (RetinaFace's PriorBox order), boxes/landmarks as deltas to decode with
  the spec's variances, class column 0 = background, 1 = face;
- ``class_scores`` are raw **logits** by default: every exporter appends the softmax
  (:class:`ffedge.export.wrapper.DeployWrapper`) and the torch reference applies it.
  A model that already applies softmax (e.g. upstream RetinaFace in ``phase='test'``) is
  wrapped with ``scores="probabilities"``: then nothing is appended.

:func:`wrap_user_model` attaches a spec, a name and that choice to a module;
:func:`load_model_def` does the same for ``ffexport --model-def FILE.py:FACTORY``;
:func:`check_outputs` runs the module once on zeros and refuses a shape mismatch before any
tracing.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ffedge.errors import FFEdgeError
from ffedge.models.base import FaceDetector
from ffedge.models.registry import INIT_SEED  # random-weight builds are reproducible
from ffedge.spec import DeploymentSpec

SCORES = ("logits", "probabilities")


class UserModel(FaceDetector):
    """A user's detector with the attributes the pipeline reads (spec, name, trained).

    The user's module sits under ``.net`` unchanged; its outputs are passed through.
    ``emits_scores`` (probabilities already) tells the exporters and the torch reference
    not to apply softmax again.
    """

    def __init__(self, net: nn.Module, spec: DeploymentSpec, name: str,
                 scores: str = "logits", trained: bool = False) -> None:
        if scores not in SCORES:
            raise FFEdgeError(f"scores must be one of {', '.join(SCORES)}, not {scores!r}")
        super().__init__(spec)
        self.net = net
        self.model_name = name
        self.scores = scores
        self.emits_scores = scores == "probabilities"
        self.trained = trained
        self.denormals_flushed = int(getattr(net, "denormals_flushed", 0))
        self.spec_note = ""  # set when the spec was assumed, not given

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, landmarks = self.net(images)
        return boxes, scores, landmarks

    def resized(self, input_size: tuple[int, int] | None) -> UserModel:
        """The same module with the spec at another export size (a new wrapper)."""
        if input_size is None or tuple(input_size) == tuple(self.spec.input_size):
            return self
        return self.renamed(self.model_name, self.spec.with_input_size(*input_size))

    def renamed(self, name: str, spec: DeploymentSpec | None = None) -> UserModel:
        """A new wrapper around the same module (another name and/or spec)."""
        net = UserModel(self.net, spec or self.spec, name, self.scores, self.trained)
        net.spec_note, net.denormals_flushed = self.spec_note, self.denormals_flushed
        return net.eval()


def default_spec() -> DeploymentSpec:
    """RetinaFace's conventions (V1's spec): BGR, mean 104/117/123, 2 anchors per level."""
    from ffedge.specs import V1_SPEC

    return V1_SPEC


def resolve_spec(spec: Any) -> DeploymentSpec:
    """A :class:`DeploymentSpec` from a spec, a zoo model name, a dict or a JSON file path.

    A dict / JSON file only needs the fields that differ from :func:`default_spec`
    (e.g. ``{"channel_order": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]}``).
    """
    if isinstance(spec, DeploymentSpec):
        return spec
    if isinstance(spec, str) and not spec.lower().endswith(".json"):
        from ffedge.specs import MODEL_SPECS

        if spec in MODEL_SPECS:
            return MODEL_SPECS[spec]
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FFEdgeError(f"--spec {spec}: not a zoo model name nor a JSON file")
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FFEdgeError(f"--spec {path}: not readable JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise FFEdgeError(f"a spec is a DeploymentSpec, a zoo model name, a dict or a JSON "
                          f"file, not {type(spec).__name__}")
    base = default_spec().to_dict()
    unknown = sorted(set(spec) - set(base))
    if unknown:
        raise FFEdgeError(f"spec has unknown fields {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(k for k in base if k != 'spec_version'))}")
    merged = {**base, **spec}
    if "priors" in spec:
        merged["priors"] = {**base["priors"], **spec["priors"]}
    try:
        return DeploymentSpec.from_dict(merged)
    except (KeyError, TypeError, ValueError) as exc:
        raise FFEdgeError(f"invalid spec: {exc}") from None


def wrap_user_model(module: nn.Module, spec: Any = None, name: str | None = None,
                    scores: str | None = None, trained: bool | None = None) -> UserModel:
    """``module`` ready for ``export(target, ExportRequest(model=name, module=...))``.

    ``spec``: a :class:`DeploymentSpec`, a zoo model name whose spec to use ("v1"), a dict of
    fields or a JSON file; default ``module.spec`` when it is one, else RetinaFace's
    (:func:`default_spec`, said in the export's notes). ``name`` defaults to the class name.
    ``scores``: "logits" (default) or "probabilities" (softmax already applied). ``trained``
    (default ``module.trained``, or True when a checkpoint is loaded) decides whether the
    export is gated on detections like a zoo model with weights.
    """
    if not isinstance(module, nn.Module):
        raise FFEdgeError(f"expected a torch nn.Module, got {type(module).__name__}")
    note = ""
    if isinstance(module, UserModel):
        inner, name = module.net, name or module.model_name
        spec, note = (module.spec, module.spec_note) if spec is None else (spec, "")
        trained = module.trained if trained is None else trained
        scores = scores or module.scores
    else:
        inner = module
        own = getattr(module, "spec", None)
        spec = own if spec is None and isinstance(own, DeploymentSpec) else spec
    if spec is None:
        note = ("no spec given (--spec / module.spec): RetinaFace's preprocessing and priors "
                "assumed (BGR, mean 104/117/123, steps 8/16/32, min sizes 16-512)")
    resolved = default_spec() if spec is None else resolve_spec(spec)
    name = name or getattr(inner, "model_name", "") or type(inner).__name__
    trained = bool(getattr(inner, "trained", False)) if trained is None else trained
    net = UserModel(inner, resolved, name, scores or "logits", trained)
    net.spec_note = note
    return net.eval()


def prepare_user_model(module: nn.Module, name: str,
                       input_size: tuple[int, int] | None = None) -> UserModel:
    """What the export pipeline does with ``ExportRequest.module``: wrap it (if it is not
    yet), take the requested name and size, refuse zoo names, and check its outputs."""
    from ffedge.specs import MODEL_SPECS

    if name in MODEL_SPECS:
        raise FFEdgeError(f"model name {name!r} is a zoo model's; name your model otherwise "
                          "(--model-name NAME)")
    net = module if isinstance(module, UserModel) else wrap_user_model(module, name=name)
    net = net.resized(input_size)
    if net.model_name != name:
        net = net.renamed(name)
    check_outputs(net)
    return net


def expected_shapes(spec: DeploymentSpec, batch: int = 1) -> dict[str, list[int]]:
    p = spec.num_priors
    return {"boxes": [batch, p, 4], "scores": [batch, p, 2], "landmarks": [batch, p, 10]}


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_outputs(net: UserModel) -> None:
    """Run ``net`` once on a zero input at its spec size; one FFEdgeError when the outputs
    do not fit the contract (shapes from the spec's priors), before any tracing."""
    h, w = net.spec.input_size
    want = expected_shapes(net.spec)
    expect = ", ".join(f"{k} {v}" for k, v in want.items())
    priors = net.spec.priors
    where = (f"model {net.model_name!r} at {h}x{w} (P = {net.spec.num_priors:,} priors: steps "
             f"{'/'.join(map(str, priors.steps))}, {'/'.join(map(str, priors.anchors_per_level))}"
             " anchors per level)")
    try:
        with torch.no_grad():
            out = net.net(torch.zeros(1, 3, h, w))
    except Exception as exc:  # the user's code may raise anything
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise FFEdgeError(f"{where} failed on a zero input [1, 3, {h}, {w}]: "
                          f"{type(exc).__name__}: {first}") from None
    got = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(got) != 3 or any(not isinstance(t, torch.Tensor) or list(t.shape) != s
                            for t, s in zip(got, want.values())):
        raise FFEdgeError(f"{where} does not fit: expected {expect}; got "
                          f"({', '.join(_shape(t) for t in got)})")
    scores = got[1].float()
    if not net.emits_scores and _looks_like_probabilities(scores):
        raise FFEdgeError(f"{where}: its class output already sums to 1 per prior "
                          "(probabilities); return raw logits (upstream RetinaFace: "
                          "phase='train'), or declare it: --scores probabilities / "
                          "wrap_user_model(net, scores='probabilities')")
    if net.emits_scores and not _looks_like_probabilities(scores):
        raise FFEdgeError(f"{where}: declared scores='probabilities' but its class output "
                          "does not sum to 1 per prior; drop --scores probabilities (logits "
                          "are the default)")


def _looks_like_probabilities(scores: torch.Tensor) -> bool:
    return bool(scores.min() >= 0 and scores.max() <= 1
                and torch.allclose(scores.sum(-1), torch.ones(()), atol=1e-4))


# --- --model-def FILE.py:FACTORY -----------------------------------------------------------

def parse_model_def(ref: str) -> tuple[Path, str]:
    """``"path/to/file.py:factory"`` -> (path, factory name), checked."""
    path_text, sep, factory = str(ref).rpartition(":")
    if not sep or not path_text or not factory.isidentifier():
        raise FFEdgeError(f"--model-def {ref}: expected FILE.py:FACTORY (e.g. "
                          "examples/tiny_detector.py:build)")
    path = Path(path_text)
    if path.suffix != ".py":
        raise FFEdgeError(f"--model-def {ref}: {path} is not a .py file")
    if not path.is_file():
        raise FFEdgeError(f"--model-def {ref}: file not found: {path}")
    return path, factory


def import_file(path: Path) -> Any:
    """Import a Python file by path, its folder on sys.path while it runs (so it can
    import its sibling files); one FFEdgeError when it raises."""
    name = f"ffedge_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FFEdgeError(f"--model-def: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file may raise anything while importing
        sys.modules.pop(name, None)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise FFEdgeError(f"--model-def: importing {path} raised {type(exc).__name__}: "
                          f"{first}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _call_factory(fn: Any, label: str, state_dict: dict | None) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {"state_dict": state_dict} if state_dict is not None and "state_dict" in params \
        else {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            return fn(**kwargs)
    except FFEdgeError:
        raise
    except Exception as exc:  # a user's factory may raise anything
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise FFEdgeError(f"--model-def {label} raised {type(exc).__name__}: {first}") from None


def load_model_def(ref: str, checkpoint: str | Path | None = None, spec: Any = None,
                   name: str | None = None, scores: str | None = None) -> UserModel:
    """Build the model ``ffexport --model-def FILE.py:FACTORY`` names.

    The factory is called with no arguments, or with ``state_dict=`` (the checkpoint's,
    unwrapped) when it has a parameter of that name, so it can read shapes from it. The
    checkpoint is then loaded strictly into what it returns (``module.`` prefixes and
    ``{'state_dict': ...}`` wrappers handled, denormals flushed). ``spec`` as in
    :func:`wrap_user_model` (default: the module's ``.spec``, else RetinaFace's);
    ``name`` defaults to the factory's name.
    """
    from ffedge.models.checkpoint import load_strict, read_state_dict

    path, factory = parse_model_def(ref)
    module = import_file(path)
    fn = getattr(module, factory, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items()
                       if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise FFEdgeError(f"--model-def {ref}: {path.name} has no function {factory!r}"
                          + (f" (it defines {', '.join(found)})" if found else ""))
    label = f"{path.name}:{factory}"
    sd = read_state_dict(checkpoint) if checkpoint is not None else None
    built = _call_factory(fn, label, sd)
    if not isinstance(built, nn.Module):
        raise FFEdgeError(f"--model-def {label} returned {type(built).__name__}, not a torch "
                          "nn.Module")
    name = name or (built.model_name if isinstance(built, UserModel) else factory)
    net = wrap_user_model(built, spec=spec, name=name, scores=scores,
                          trained=True if sd is not None else None)
    if sd is not None:
        load_strict(net.net, sd, name, str(checkpoint))
        net.denormals_flushed = int(getattr(net.net, "denormals_flushed", 0))
    return net

