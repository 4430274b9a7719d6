"""Memorization: MA (Eq. 15), EL_n (Eq. 16) and the forgetting criterion (Eq. 17)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import NeuMuterError
from ..lm import as_language_model
from .core import Samples, check_context, greedy_continuations, teacher_forced, token_lists


def memorization_accuracy(model, tokenizer, samples: Samples, *, batch_size: int = 8, max_length: int | None = None) -> torch.Tensor:
    """MA per sample (Eq. 15): share of positions t = 1..T-1 whose greedy next token equals x_t.

    One teacher-forced forward per batch replaces the reference's T - 1 single-token ``generate`` calls.
    """
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    return torch.stack([hits.float().mean() for _, hits in teacher_forced(lm, sequences, batch_size)])


def teacher_forced_scores(model, tokenizer, samples: Samples, *, batch_size: int = 8,
                          max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(MA, mean loss) per sample from the same single forward: what a memorization scan needs."""
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    scored = teacher_forced(lm, sequences, batch_size)
    return (torch.stack([hits.float().mean() for _, hits in scored]),
            torch.stack([losses.mean() for losses, _ in scored]))


def suffix_extraction(model, tokenizer, samples: Samples, *, prefix_tokens: int = 32, suffix_tokens: int = 48,
                      batch_size: int = 8) -> torch.Tensor:
    """Per sample: the share of the ``suffix_tokens`` tokens after its first ``prefix_tokens`` that greedy
    decoding from that prefix reproduces, position by position (1.0: extracted verbatim). The Training Data
    Extraction Challenge's test, which the paper's samples come from, is a 50-token suffix from a 50-token
    prefix; a sample shorter than ``prefix_tokens + suffix_tokens`` tokens is refused."""
    if prefix_tokens < 1 or suffix_tokens < 1:
        raise NeuMuterError(f"prefix_tokens and suffix_tokens must be at least 1, got {prefix_tokens}, {suffix_tokens}")
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=prefix_tokens + suffix_tokens)
    decoded = greedy_continuations(lm, [seq[:prefix_tokens] for seq in sequences], [suffix_tokens] * len(sequences),
                                   batch_size)
    truth = [seq[prefix_tokens:prefix_tokens + suffix_tokens] for seq in sequences]
    return torch.tensor([sum(a == b for a, b in zip(new, true)) / suffix_tokens for new, true in zip(decoded, truth)])


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """All contiguous n-grams, in order and with repeats."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_overlap(generated: Sequence[int], reference: Sequence[int], n: int) -> float:
    """Overlap_n of Eq. 16 as knowledge-unlearning computes it: generated n-grams (with multiplicity)
    found among the reference's n-grams, over the number of reference n-grams (0 when it has none)."""
    reference_grams = ngrams(reference, n)
    if not reference_grams:
        return 0.0
    present = set(reference_grams)
    return sum(gram in present for gram in ngrams(generated, n)) / len(reference_grams)


def extraction_likelihood(model, tokenizer, samples: Samples, n: int = 10, *, batch_size: int = 32,
                          prefix_stride: int = 1, max_length: int | None = None) -> torch.Tensor:
    """EL_n per sample (Eq. 16): mean over prefix lengths t = 1..T-n of Overlap_n between the greedy
    continuation of x_<t (decoded up to length T) and the true suffix x_>=t.

    Greedy decoding shares work between prefixes: when the model's greedy next token after x_<t is x_t
    itself, the continuation of x_<t IS x_t followed by the continuation of x_<t+1. One teacher-forced
    forward finds these positions (the hits of MA), so only the prefixes where a run of correct predictions
    ends are decoded, all of them together as left-padded prompts over the KV cache; on memorized text
    (MA near 1) that is a small share of the prefixes. ``prefix_stride`` > 1 evaluates only
    t = 1, 1 + stride, ... and averages those (an estimate; the default is exact).
    """
    if n < 1 or prefix_stride < 1:
        raise NeuMuterError(f"n and prefix_stride must be at least 1, got n={n}, prefix_stride={prefix_stride}")
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=n + 1, max_length=max_length)
    check_context(lm, [len(seq) for seq in sequences])
    end_ids = set(lm.end_token_ids())
    predicted = [hits.tolist() for _, hits in teacher_forced(lm, sequences, batch_size)]  # [j]: x_j+1 from x_<=j

    def run_end(i: int, t: int) -> int:
        """The first u >= t whose greedy next token is not x_u (len(x) when the model reproduces the rest)."""
        sequence, u = sequences[i], t
        while u < len(sequence) and predicted[i][u - 1] and sequence[u] not in end_ids:
            u += 1
        return u

    jobs = [(i, t, run_end(i, t)) for i, seq in enumerate(sequences) for t in range(1, len(seq) - n + 1, prefix_stride)]
    to_decode = sorted({(i, u) for i, _, u in jobs if u < len(sequences[i])})
    decoded = dict(zip(to_decode, greedy_continuations(
        lm, [sequences[i][:u] for i, u in to_decode], [len(sequences[i]) - u for i, u in to_decode], batch_size)))
    totals = torch.zeros(len(sequences), dtype=torch.float64)
    counts = torch.zeros(len(sequences), dtype=torch.float64)
    for i, t, u in jobs:
        generated = sequences[i][t:u] + decoded.get((i, u), [])
        totals[i] += ngram_overlap(generated, sequences[i][t:], n)
        counts[i] += 1
    return (totals / counts).float()


def forgetting_thresholds(model, tokenizer, heldout_texts: Samples, *, n: int = 10, batch_size: int = 32,
                          prefix_stride: int = 1, max_length: int | None = None) -> dict[str, float]:
    """Right-hand sides of Eq. 17: average MA and EL_n over held-out samples never trained on.

    Returns ``{"ma": ..., f"el{n}": ...}`` (``el10`` by default).
    """
    ma = memorization_accuracy(model, tokenizer, heldout_texts, batch_size=batch_size, max_length=max_length)
    el = extraction_likelihood(model, tokenizer, heldout_texts, n, batch_size=batch_size,
                               prefix_stride=prefix_stride, max_length=max_length)
    return {"ma": float(ma.mean()), f"el{n}": float(el.mean())}


def forgotten_mask(ma: torch.Tensor, el: torch.Tensor, thresholds: Mapping[str, float], n: int = 10) -> torch.Tensor:
    """Eq. 17 per sample: True where MA <= threshold["ma"] and EL_n <= threshold[f"el{n}"]."""
    key = f"el{n}"
    if "ma" not in thresholds or key not in thresholds:
        raise NeuMuterError(f"thresholds need keys 'ma' and '{key}', got {sorted(thresholds)}")
    return (torch.as_tensor(ma) <= thresholds["ma"]) & (torch.as_tensor(el) <= thresholds[key])


def forgotten_fraction(ma: torch.Tensor, el: torch.Tensor, thresholds: Mapping[str, float], n: int = 10) -> float:
    """Share of samples that meet Eq. 17 (1.0 is the paper's stopping point)."""
    return float(forgotten_mask(ma, el, thresholds, n).float().mean())
