"""The FFN output projection's weight as an [out, in] matrix, whatever its module type.

``torch.nn.Linear`` stores [out, in]; GPT-2's ``Conv1D`` stores [in, out], so its transpose (a view:
writes go through) is returned. IG zeroes input columns of this matrix; LUNAR retrains it.
"""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D


def projection_weight(projection: torch.nn.Module) -> torch.Tensor:
    """The [out, in] weight of an FFN output projection (a view for ``Conv1D``)."""
    if isinstance(projection, Conv1D):
        return projection.weight.T
    if isinstance(projection, torch.nn.Linear):
        return projection.weight
    raise TypeError(f"unsupported FFN output projection {type(projection).__name__}: expected Linear or Conv1D")
