"""Tasks for engine tests, named by import path as a user's own task would be."""

import torch

from multitx.tasks.charlm import CharLMTask


class NaNAtStep(CharLMTask):
    """The char LM, except that training step `cfg.nan_step` (1-based) has a NaN loss."""

    def __init__(self, cfg, runtime):
        super().__init__(cfg, runtime)
        self.training_calls = 0

    def loss(self, model, batch) -> torch.Tensor:
        loss = super().loss(model, batch)
        if model.training:
            self.training_calls += 1
            if self.training_calls == self.cfg.nan_step:
                return loss * float("nan")
        return loss
