"""Every zoo model's deployment spec, defined once (numpy-free, torch-free).

The model files, the exporters, the CLIs and the benchmarks read a model's input size,
normalisation, channel order, layout, size divisor, priors, variances and decode/NMS
defaults from here; nothing else types them.
"""

from __future__ import annotations

from ffedge.errors import FFEdgeError
from ffedge.spec import DeploymentSpec, PriorSpec

#: RetinaFace's two anchors per level, V1's conventions (BGR, mean 104/117/123, no scaling).
RETINAFACE_PRIORS = PriorSpec(steps=(8, 16, 32),
                              min_sizes=((16, 32), (64, 128), (256, 512)),
                              variances=(0.1, 0.2))

#: Three anchors per level (25,200 priors at 640x640): P3 covers faces of 8-32 px (the
#: card's "<32x32" small-face level), P4 fills 48-96 px at <= 1.5x spacing, P5 keeps V1's
#: large-face range up to 512 px.
THREE_ANCHOR_PRIORS = PriorSpec(steps=(8, 16, 32),
                                min_sizes=((8, 16, 32), (48, 64, 96), (128, 256, 512)),
                                variances=(0.1, 0.2))

V1_SPEC = DeploymentSpec(input_size=(640, 640), channel_order="BGR",
                         mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0),
                         resize_mode="letterbox", priors=RETINAFACE_PRIORS)
# The trained V2 family was trained with V1's preprocessing and priors (upstream config).
V2_CA_SPEC = V1_SPEC
ECA_CBAM_SPEC = V1_SPEC
V2_ULTRA_SPEC = V1_SPEC
NANO_B_SPEC = DeploymentSpec(input_size=(640, 640), channel_order="BGR",
                             mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0),
                             resize_mode="letterbox", priors=THREE_ANCHOR_PRIORS)

MODEL_SPECS: dict[str, DeploymentSpec] = {
    "v1": V1_SPEC,
    "v2_ca": V2_CA_SPEC,
    "eca_cbam": ECA_CBAM_SPEC,
    "v2_ultra": V2_ULTRA_SPEC,
    "nano_b": NANO_B_SPEC,
}


#: Specs of models defined outside the zoo (``ffexport --model-def``, ``ExportRequest.module``),
#: registered for this process by the export pipeline so runners can read its un-stamped
#: candidates by name. Artifacts carry their spec in metadata; nothing else needs these.
USER_SPECS: dict[str, DeploymentSpec] = {}


def register_spec(model: str, spec: DeploymentSpec) -> None:
    """Let :func:`spec_for` answer ``spec`` for a user's ``model`` in this process."""
    if model in MODEL_SPECS:
        raise FFEdgeError(f"{model!r} is a zoo model's name; name your model otherwise")
    USER_SPECS[model] = spec


def spec_for(model: str) -> DeploymentSpec:
    """The zoo spec of ``model`` (no torch needed), else one registered by
    :func:`register_spec` in this process."""
    if model in USER_SPECS and model not in MODEL_SPECS:
        return USER_SPECS[model]
    if model not in MODEL_SPECS:
        raise FFEdgeError(f"unknown model {model!r}; choose one of: {', '.join(sorted(MODEL_SPECS))}")
    return MODEL_SPECS[model]
