"""The reference runner: the PyTorch module itself, eager, in eval mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner


class TorchRunner(Runner):
    runtime = "torch"

    def __init__(self, model_name: str, checkpoint: str | Path | None = None,
                 input_size: tuple[int, int] | None = None, threads: int | None = None,
                 module=None) -> None:
        from ffedge.models import get_spec

        spec = module.spec if module is not None else get_spec(model_name)
        if input_size is not None:
            spec = spec.with_input_size(*input_size)
        info = ArtifactInfo(model=model_name, spec=spec, path=Path(checkpoint) if checkpoint else None)
        super().__init__(info, threads)
        self.checkpoint = checkpoint
        self.module = module

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.module is None:
            from ffedge.models import create_model

            # checkpoint None: the seeded random init (callers resolve bundled weights)
            self.module = create_model(self.info.model, checkpoint=self.checkpoint,
                                       input_size=self.info.spec.input_size, pretrained=False)
        self.module.eval()

    def _infer(self, batch: np.ndarray) -> Outputs:
        import torch

        with torch.inference_mode():
            boxes, logits, landmarks = self.module(torch.from_numpy(batch))
            # a user's model may emit probabilities already (ffedge.models.user)
            emits = getattr(self.module, "emits_scores", False)
            scores = logits if emits else torch.softmax(logits, dim=-1)
        return boxes.numpy(), scores.numpy(), landmarks.numpy()
