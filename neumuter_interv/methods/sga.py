"""Selective gradient ascent (SGA; Barbulescu & Triantafillou, ICML 2024, "To Each (Textual Sequence)
Its Own: Improving Memorized-Data Unlearning in Large Language Models").

Every epoch measures each forget sample's memorization accuracy (MA, Eq. 15) and applies gradient
ascent to the ``top_k`` most memorized samples only (B.4: k = 1). On its own SGA stops once the
population's mean MA is at or under ``memorization_limit`` (B.4: 70%). A caller-supplied
``stop_when`` (the paper's Eq. 17, which its Table 2 SGA runs reached: MA 29%) replaces that rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import pad_batch
from ..metrics import memorization_accuracy
from .finetune import FineTuneSettings
from .ga import GradientAscent


@dataclass
class SelectiveGradientAscentSettings(FineTuneSettings):
    memorization_limit: float = 0.70
    top_k: int = 1
    ma_batch_size: int = 8


class SelectiveGradientAscent(GradientAscent):
    name = "sga"
    settings_class = SelectiveGradientAscentSettings

    def select_batches(self, model, state, data):
        settings = self.settings
        ma = memorization_accuracy(model, None, data.forget_ids, batch_size=settings.ma_batch_size)
        if settings.stop_when is None and float(ma.mean()) <= settings.memorization_limit:
            return []
        most_memorized = ma.argsort(descending=True)[: settings.top_k].tolist()
        return [pad_batch([data.forget_ids[i] for i in most_memorized], data.pad_id).to(data.device)]
