"""What every export format receives: the base model, its tokenizer, the (composed) mask, and
where the base model came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures import ffn_width, num_layers
from ..errors import NeuMuterError
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
        expected = (self.selection.ffn_width, self.selection.num_model_layers)
        actual = (ffn_width(self.model), num_layers(self.model))
        if expected != actual:
            raise NeuMuterError(f"the mask was made for {expected[1]} layers of FFN width {expected[0]}, "
                                f"but the model has {actual[1]} layers of width {actual[0]}")
        model_type = self.model.config.model_type
        if self.selection.model_type and self.selection.model_type != model_type:
            raise NeuMuterError(f"the mask was made for a {self.selection.model_type} model, not {model_type}")
        if not self.selection.layers:
            raise NeuMuterError("the mask names no layer")

    def dense_scales(self) -> dict[int, torch.Tensor]:
        """``{layer: full per-neuron scale vector}`` (ones except the selected neurons), computed
        exactly as the frozen intervention computes it."""
        return {
            layer: FrozenScaling(embed_dim=self.selection.ffn_width, neuron_indices=neurons.indices,
                                 neuron_scales=neurons.scales).dense_scale()
            for layer, neurons in sorted(self.selection.layers.items())
        }
