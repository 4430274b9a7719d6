"""KL minimization (the TOFU baseline of Maini et al., 2024): gradient ascent on the forget set plus
KL(original || current) of the next-token distributions on the retain set. Needs the retain set and a
frozen copy of the original model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .finetune import FineTuneSettings, FineTuningMethod, forget_cross_entropy, frozen_copy, logits_of
from .losses import kl_to_reference


@dataclass
class KLSettings(FineTuneSettings):
    retain_weight: float = 1.0


class KLMinimization(FineTuningMethod):
    name = "kl"
    needs_retain = True
    settings_class = KLSettings

    def prepare(self, model):
        return frozen_copy(model)

    def loss(self, model, reference, forget, retain):
        with torch.no_grad():
            reference_log_probs = F.log_softmax(logits_of(reference, retain).float(), dim=-1)
        kl = kl_to_reference(logits_of(model, retain), reference_log_probs, retain.attention_mask)
        return -forget_cross_entropy(model, forget) + self.settings.retain_weight * kl
