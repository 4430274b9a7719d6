"""Gradient difference (GD; Liu et al., 2022, "Continual Learning and Private Unlearning"; the TOFU
baseline of Maini et al., 2024): gradient ascent on the forget set plus gradient descent on the retain
set. Needs the retain set, which NeuMuter does not."""

from __future__ import annotations

from dataclasses import dataclass

from .finetune import FineTuneSettings, FineTuningMethod, forget_cross_entropy


@dataclass
class GradientDifferenceSettings(FineTuneSettings):
    retain_weight: float = 1.0


class GradientDifference(FineTuningMethod):
    name = "gd"
    needs_retain = True
    settings_class = GradientDifferenceSettings

    def loss(self, model, state, forget, retain):
        return -forget_cross_entropy(model, forget) + self.settings.retain_weight * forget_cross_entropy(model, retain)
