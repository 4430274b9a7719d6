"""Losses: per-sample loss, perplexity and the loss-based MIA (Appendix B.3)."""

from __future__ import annotations

import math

import torch

from ..data import model_context_length
from ..errors import NeuMuterError
from ..lm import as_language_model
from .core import Samples, teacher_forced, token_lists


def sample_losses(model, tokenizer, samples: Samples, *, batch_size: int = 8, max_length: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample (positions 1..T-1)."""
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    return torch.stack([losses.mean() for losses, _ in teacher_forced(lm, sequences, batch_size)])


def perplexity(model, tokenizer, texts: Samples, *, batch_size: int = 8, context_length: int | None = None) -> float:
    """Token-weighted perplexity exp(sum of token losses / number of predicted tokens) over all texts.

    Texts longer than the context (default: the model's ``max_position_embeddings``/``n_positions``)
    are cut into consecutive non-overlapping windows, each scored on its own; one-token windows are
    dropped since they predict nothing.
    """
    lm = as_language_model(model)
    window = context_length or model_context_length(lm)
    sequences = token_lists(tokenizer, texts, min_tokens=1)
    pieces = []
    for seq in sequences:
        step = window or len(seq)
        pieces += [seq[i:i + step] for i in range(0, len(seq), step) if len(seq[i:i + step]) >= 2]
    if not pieces:
        raise NeuMuterError("perplexity needs at least one text of two or more tokens")
    per_piece = teacher_forced(lm, pieces, batch_size)
    total = sum(float(losses.sum()) for losses, _ in per_piece)
    count = sum(losses.numel() for losses, _ in per_piece)
    return math.exp(total / count)


def loss_mia(model, tokenizer, forget_samples: Samples, heldout_samples: Samples, *, batch_size: int = 8,
             max_length: int | None = None) -> dict[str, torch.Tensor | float]:
    """Loss-based membership inference distance (Appendix B.3, after Barbulescu & Triantafillou 2024).

    Per forget sample |loss(x) - mean loss over held-out samples|; small distances mean the forget
    samples look like unseen text (less leakage). Returns ``distances`` (per sample), ``mean_distance``,
    ``forget_losses`` and ``heldout_mean_loss``.
    """
    forget = sample_losses(model, tokenizer, forget_samples, batch_size=batch_size, max_length=max_length)
    heldout = sample_losses(model, tokenizer, heldout_samples, batch_size=batch_size, max_length=max_length)
    return mia_from_losses(forget, heldout)


def mia_from_losses(forget_losses: torch.Tensor, heldout_losses: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """``loss_mia`` from per-sample losses already computed (e.g. with MA by ``teacher_forced_scores``)."""
    reference = float(heldout_losses.mean())
    distances = (forget_losses - reference).abs()
    return {"distances": distances, "mean_distance": float(distances.mean()),
            "forget_losses": forget_losses, "heldout_mean_loss": reference}
