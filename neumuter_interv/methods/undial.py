"""Deliberate imagination / UNDIAL (DI; Dong et al., 2024, "Unmemorization in Large Language Models via
Self-Distillation and Deliberate Imagination"; UNDIAL, NAACL 2025).

Self-distillation on the forget set: the teacher is the original model with the logit of each true
next token lowered by ``tau`` (B.4: tau = 8); the student is trained with cross-entropy to the
teacher's softmax, so the memorized token loses probability mass to the model's other candidates
while the rest of the distribution is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX
from .finetune import FineTuneSettings, FineTuningMethod, frozen_copy, logits_of
from .losses import lowered_true_token_log_probs


@dataclass
class UndialSettings(FineTuneSettings):
    tau: float = 8.0


class Undial(FineTuningMethod):
    name = "di"
    settings_class = UndialSettings

    def prepare(self, model):
        return frozen_copy(model)

    def loss(self, model, teacher, forget, retain):
        with torch.no_grad():
            soft_targets = lowered_true_token_log_probs(logits_of(teacher, forget), forget.labels, self.settings.tau).exp()
        log_probs = F.log_softmax(logits_of(model, forget)[:, :-1].float(), dim=-1)
        per_token = -(soft_targets * log_probs).sum(-1)
        mask = (forget.labels[:, 1:] != IGNORE_INDEX).to(per_token.dtype)
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
