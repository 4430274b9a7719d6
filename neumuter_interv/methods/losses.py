"""The loss terms several methods share: next-token cross-entropy (GA, GD, NPO, GRUN, ...; NeuMuter's forget
term), KL to the original model's distribution (KL minimization; NeuMuter's neighbour term) and DI's teacher,
the original distribution with the true token lowered (DI; NeuMuter's ``forget_loss="distill"``). NeuMuter's
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


def lowered_true_token_log_probs(logits: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """DI's teacher (UNDIAL): log-softmax of the logits predicting each next token, [batch, tokens - 1,
    vocabulary], with the true next token's logit lowered by ``tau`` (pad targets lower token 0: masked by
    whoever uses them)."""
    lowered = logits[:, :-1].to(torch.float32, copy=True)  # never the caller's logits
    lowered.scatter_add_(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1), torch.full_like(lowered[..., :1], -tau))
    return F.log_softmax(lowered, dim=-1)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || model) per predicted token, averaged over non-pad targets (``teacher_log_probs`` as
    ``lowered_true_token_log_probs`` gives them)."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    per_token = (teacher_log_probs.exp() * (teacher_log_probs - log_probs)).sum(-1)
    mask = (labels[:, 1:] != IGNORE_INDEX).to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
