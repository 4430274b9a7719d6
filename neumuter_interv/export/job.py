"""What every export format receives: the base model, its tokenizer, the (composed) mask, and
where the base model came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..interventions import FrozenScaling
from ..methods.neumuter.selection import Selection


@dataclass
class ExportJob:
    model: torch.nn.Module
    tokenizer: object
    selection: Selection
    base_model: str  # path or Hub id, written into adapter configs and model cards

    def __post_init__(self):
        """Refuse a mask made for another model before anything is written."""
        self.selection.check_fits(self.model)

    def dense_scales(self) -> dict[int, torch.Tensor]:
        """``{layer: full per-neuron scale vector}`` (ones except the selected neurons), computed
        exactly as the frozen intervention computes it."""
        return {
            layer: FrozenScaling(embed_dim=self.selection.ffn_width, neuron_indices=neurons.indices,
                                 neuron_scales=neurons.scales).dense_scale()
            for layer, neurons in sorted(self.selection.layers.items())
        }
