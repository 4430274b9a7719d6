"""Gradient ascent (GA; Jang et al., ACL 2023, "Knowledge Unlearning for Mitigating Privacy Risks in
Language Models"): maximize the forget set's language-modeling loss, all weights, lr 5e-5, the whole
forget set in one batch so one update per epoch, until the forgetting criterion (Eq. 17) holds."""

from __future__ import annotations

from dataclasses import dataclass

from .finetune import FineTuneSettings, FineTuningMethod, forget_cross_entropy


@dataclass
class GradientAscentSettings(FineTuneSettings):
    """Jang et al.'s setting (see ``FineTuneSettings`` for why 5e-5, not B.4's 5e-4)."""


class GradientAscent(FineTuningMethod):
    name = "ga"
    settings_class = GradientAscentSettings

    def loss(self, model, state, forget, retain):
        return -forget_cross_entropy(model, forget)
