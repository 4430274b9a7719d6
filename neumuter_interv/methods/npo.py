"""Negative preference optimization (NPO; Zhang et al., COLM 2024, "Negative Preference Optimization:
From Catastrophic Collapse to Effective Unlearning"): the forget samples are dispreferred answers
with no preferred one, loss = -(2/beta) log sigmoid(-beta log(p_theta(x) / p_ref(x))), beta = 0.1.
Unlike GA the loss is bounded, so it slows down instead of diverging. Forget set only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .finetune import (
    FineTuneSettings,
    FineTuningMethod,
    frozen_copy,
    logits_of,
    npo_loss,
    sequence_log_likelihood,
)


@dataclass
class NPOSettings(FineTuneSettings):
    beta: float = 0.1


class NegativePreferenceOptimization(FineTuningMethod):
    name = "npo"
    settings_class = NPOSettings

    def prepare(self, model):
        return frozen_copy(model)

    def loss(self, model, reference, forget, retain):
        with torch.no_grad():
            reference_ll = sequence_log_likelihood(logits_of(reference, forget), forget.labels)
        ll = sequence_log_likelihood(logits_of(model, forget), forget.labels)
        return npo_loss(ll, reference_ll, self.settings.beta)
