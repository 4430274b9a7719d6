"""The loss terms several methods share: next-token cross-entropy (GA, GD, NPO, GRUN, ...; NeuMuter's forget
term) and KL to the original model's distribution (KL minimization; NeuMuter's neighbour term). NeuMuter's
localization computes both in one chunked pass (``methods.neumuter.losses.joint_losses``), tested against
these definitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over non-pad targets."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def kl_to_reference(logits: torch.Tensor, reference_log_probs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(P_original || P_gated) per token over the vocabulary, averaged over non-pad positions."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_token = (reference_log_probs.exp() * (reference_log_probs - log_probs)).sum(-1)
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
