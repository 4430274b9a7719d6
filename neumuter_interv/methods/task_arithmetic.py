"""Task arithmetic (TA; Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic"): fine-tune on
the forget set, take the task vector delta = theta_ft - theta, and return theta - tau * delta
(B.4: tau = 3).

With a stop criterion, fine-tuning ends at the first epoch whose NEGATED model satisfies it (the
check swaps the negated weights in and back out); without one it runs ``max_epochs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .finetune import FineTuneSettings, FineTuningMethod, forget_cross_entropy


@dataclass
class TaskArithmeticSettings(FineTuneSettings):
    tau: float = 3.0
    max_epochs: int = 10


class TaskArithmetic(FineTuningMethod):
    name = "ta"
    settings_class = TaskArithmeticSettings

    def loss(self, model, state, forget, retain):
        return forget_cross_entropy(model, forget)

    def prepare(self, model) -> dict[str, torch.Tensor]:
        """The original weights theta."""
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    def criterion_met(self, model, original) -> bool:
        if self.settings.stop_when is None:
            return False
        fine_tuned = self._negate(model, original)
        try:
            return bool(self.settings.stop_when(model))
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(fine_tuned[name])

    def finish(self, model, original) -> None:
        self._negate(model, original)

    @torch.no_grad()
    def _negate(self, model, original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Write theta - tau * (theta_ft - theta) into the model; return theta_ft."""
        fine_tuned = {}
        for name, p in model.named_parameters():
            fine_tuned[name] = p.detach().clone()
            p.copy_(original[name] - self.settings.tau * (fine_tuned[name] - original[name]))
        return fine_tuned
