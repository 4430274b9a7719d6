"""LUNAR's retrained FFN output projection applied as a pyvene intervention instead of a weight edit.

The edit W -> W + dW of the output projection (W: [hidden, d_ff], hidden < d_ff) is
carried to the projection's INPUT, the FFN activation a (pyvene's ``mlp_activation``), by the
pseudo-inverse L = W^+: a' = a + L dW a. Since W W^+ = I when W has full row rank,
W a' + b = (W + dW) a + b exactly, so the intervened model equals the weight-edited one.

Stored in buffers (pyvene drops constructor kwargs on load); their shapes come from the checkpoint.
"""

from __future__ import annotations

import torch

from ...interventions import FFNIntervention


class ProjectionEdit(FFNIntervention):
    """a' = a + lift @ weight_delta @ a on a [batch, seq, d_ff] FFN activation."""

    def __init__(self, weight_delta=None, lift=None, **kwargs):
        super().__init__(**kwargs)
        empty = torch.zeros(0, self.width)
        self.register_buffer("weight_delta", empty if weight_delta is None else torch.as_tensor(weight_delta).float())
        self.register_buffer("lift", empty.T if lift is None else torch.as_tensor(lift).float())
        self.train(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The hidden size is only known from the checkpoint: resize before loading.
        for name in ("weight_delta", "lift"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, base, source=None, subspaces=None, **kwargs):
        a = base.float()
        return (a + (a @ self.weight_delta.T) @ self.lift.T).to(base.dtype)
