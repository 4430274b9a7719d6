"""NeuMuter's two pyvene interventions on the FFN activation (component ``"mlp_activation"``).

* ``HardConcreteGate``: the learnable mask of Section 3.2 (Eq. 10-12). Stochastic while the
  intervention is in training mode, deterministic in eval mode; one gate sample per forward call,
  shared by every example and position of the batch, as the official code does.
* ``FrozenScaling``: the deployed mask of Eq. 14: selected neurons keep their deterministic gate value,
  all other neurons are exactly 1. Stored sparsely (indices + values).

Both follow pyvene 0.1.8's rules for sourceless interventions (see the notes on pyvene): the base
classes come in the order (Sourceless, Trainable, DistributedRepresentation) or pyvene never calls
them, and ``keep_last_dim=True`` so ``base`` arrives as [batch, seq, d_ff]. pyvene rebuilds an
intervention from its representation config alone when loading, so every hyper-parameter lives in a
buffer and survives ``IntervenableModel.save``/``load``.
"""

from __future__ import annotations

import pyvene as pv
import torch

from .hard_concrete import HardConcreteParams, deterministic_gate, l0_penalty, sample_gate
from .validation import check_neuron_mask


class FFNIntervention(pv.SourcelessIntervention, pv.TrainableIntervention, pv.DistributedRepresentationIntervention):
    """Shared plumbing: a sourceless, per-neuron intervention on a [batch, seq, d_ff] activation."""

    def __init__(self, **kwargs):
        kwargs["keep_last_dim"] = True
        super().__init__(**kwargs)
        if self.embed_dim is None:
            raise ValueError(f"{type(self).__name__} needs embed_dim (the FFN width)")

    @property
    def width(self) -> int:
        return int(self.embed_dim)

    def __str__(self) -> str:
        return f"{type(self).__name__}(width={self.width})"


class HardConcreteGate(FFNIntervention):
    """Learnable per-neuron hard-concrete gate multiplying the FFN activation (Eq. 10-11).

    In training mode every forward draws a gate sample shared by all rows of the batch; with
    ``row_groups`` set (row counts, e.g. ``(n_forget, n_neighbours)``) each group of consecutive rows
    gets its own sample, drawn in group order: one joint forward then sees the noise of the official
    code's separate forwards.
    """

    def __init__(self, beta: float = 1.0 / 3.0, gamma: float = -0.1, zeta: float = 1.1,
                 init_open_probability: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        params = HardConcreteParams(beta, gamma, zeta)
        init = params.initial_log_alpha(init_open_probability)
        self.log_alpha = torch.nn.Parameter(torch.full((self.width,), init, dtype=torch.float32))
        self.register_buffer("hard_concrete_constants", torch.tensor([beta, gamma, zeta], dtype=torch.float64))
        self.generator: torch.Generator | None = None  # set by the trainer for reproducible noise
        self.row_groups: tuple[int, ...] | None = None  # set by the trainer: one sample per group of rows

    @property
    def params(self) -> HardConcreteParams:
        beta, gamma, zeta = self.hard_concrete_constants.tolist()
        return HardConcreteParams(beta, gamma, zeta)

    def gate(self) -> torch.Tensor:
        """A fresh stochastic sample in training mode, the deterministic gate in eval mode."""
        if self.training:
            return sample_gate(self.log_alpha, self.params, self.generator)
        return deterministic_gate(self.log_alpha, self.params)

    def l0(self) -> torch.Tensor:
        """Eq. 12 for this layer: the expected fraction of closed gates."""
        return l0_penalty(self.log_alpha, self.params)

    def forward(self, base, source=None, subspaces=None, **kwargs):
        if not (self.training and self.row_groups):
            return base * self.gate().to(base.dtype)
        samples = torch.stack([self.gate() for _ in self.row_groups])
        sequences = sum(self.row_groups)
        per_row = base.shape[0] // sequences  # 1, or the positions of a sequence when the FFN flattens them (OPT)
        counts = torch.tensor(self.row_groups, device=samples.device) * per_row
        gate = samples.repeat_interleave(counts, dim=0)
        return base * gate.view(base.shape[0], *([1] * (base.dim() - 2)), self.width).to(base.dtype)


class FrozenScaling(FFNIntervention):
    """Deterministic deployed mask (Eq. 14): ``activation[..., i] *= scale_i`` for the selected i only."""

    def __init__(self, neuron_indices=None, neuron_scales=None, **kwargs):
        super().__init__(**kwargs)
        indices = [] if neuron_indices is None else neuron_indices
        scales = [] if neuron_scales is None else neuron_scales
        check_neuron_mask(indices, scales, self.width, type(self).__name__)
        self.register_buffer("neuron_indices", torch.as_tensor(indices, dtype=torch.long))
        self.register_buffer("neuron_scales", torch.as_tensor(scales, dtype=torch.float32))
        self.train(False)  # nothing stochastic: the intervention is in eval mode from birth (and after load)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of selected neurons is only known from the checkpoint: check it, resize, then load.
        if prefix + "neuron_indices" in state_dict and prefix + "neuron_scales" in state_dict:
            check_neuron_mask(state_dict[prefix + "neuron_indices"], state_dict[prefix + "neuron_scales"], self.width,
                              f"{type(self).__name__} {prefix.rstrip('.') or 'buffers'}")
        for name, dtype in (("neuron_indices", torch.long), ("neuron_scales", torch.float32)):
            if prefix + name in state_dict:  # the buffer's own dtype, whatever the file stored (int32, uint8, ...)
                setattr(self, name, torch.empty_like(state_dict[prefix + name], dtype=dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dense_scale(self) -> torch.Tensor:
        """The full per-neuron scale vector: ones except at the selected neurons."""
        scale = torch.ones(self.width, dtype=self.neuron_scales.dtype, device=self.neuron_scales.device)
        return scale.index_copy(0, self.neuron_indices, self.neuron_scales)

    def forward(self, base, source=None, subspaces=None, **kwargs):
        return base * self.dense_scale().to(base.dtype)
