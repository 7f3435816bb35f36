"""Tasks for engine tests, named by import path as a user's own task would be."""

import os
import signal

import torch

from multitx.tasks.caption import CaptionTask
from multitx.tasks.charlm import CharLMTask
from multitx.tasks.lm import LanguageModelTask
from multitx.tasks.vit import ViTTask


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


class KilledAtStep:
    """Mixed into a task: the process SIGKILLs itself in the middle of training step
    `cfg.kill_at` (counted from this process's start; 0: never), a kill at a known
    point with nothing saved on the way out. Under torchrun, `cfg.kill_rank` (if set)
    names the one process that dies."""

    def loss(self, model, batch) -> torch.Tensor:
        loss = super().loss(model, batch)
        if model.training:
            self.training_calls = getattr(self, "training_calls", 0) + 1
            if self.training_calls == self.cfg.kill_at and self.runtime.rank == self.cfg.get("kill_rank",
                                                                                              self.runtime.rank):
                os.kill(os.getpid(), signal.SIGKILL)
        return loss


class KilledCharLM(KilledAtStep, CharLMTask):
    pass


class KilledViT(KilledAtStep, ViTTask):
    pass


class KilledCaptioner(KilledAtStep, CaptionTask):
    pass


class KilledLM(KilledAtStep, LanguageModelTask):
    pass
