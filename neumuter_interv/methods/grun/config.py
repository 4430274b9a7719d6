"""Settings of the GRUN-like method (Ren et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass

from ..finetune import FineTuneSettings

FORGET_LOSSES = ("gd", "npo")


@dataclass
class GRUNSettings(FineTuneSettings):
    """``layers`` None picks three layers at 1/4, 1/2 and 3/4 of the depth (our default; GRUN edits a
    few layers). ``forget_loss`` is GRUN's "GD" (ascent on forget + descent on retain) or "NPO" (NPO on
    forget + descent on retain) variant; ``gate_weight`` scales the gate's BCE (1 on forget tokens, 0 on
    retain tokens). Only the interventions train, so the learning rate is ReFT's, not GA's."""

    layers: str | list[int] | None = None
    rank: int = 4
    gate_hidden: int = 0  # 0: a Linear gate; > 0: a 3-layer MLP of that width
    forget_loss: str = "gd"
    npo_beta: float = 0.1
    retain_weight: float = 1.0
    gate_weight: float = 1.0
    learning_rate: float = 1e-3
    max_epochs: int = 50

    def __post_init__(self):
        super().__post_init__()
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}")
