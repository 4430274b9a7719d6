"""How every metric reads its inputs: samples as texts or token ids, checked against the model's context;
batches; progress bars (one switch, ``progress_bars``); teacher-forced scores and greedy continuations, the
two passes every metric is built from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import model_context_length, pad_batch
from ..errors import NeuMuterError
from ..lm import LanguageModel, as_language_model

Samples = Sequence[str] | Sequence[Sequence[int]] | torch.Tensor
QARecord = tuple[str, str] | Mapping[str, str]

def token_lists(tokenizer, samples: Samples, min_tokens: int, max_length: int | None = None) -> list[list[int]]:
    """Samples as lists of token ids, optionally cut to ``max_length``; each needs ``min_tokens``."""
    source = getattr(samples, "source", None)  # data.Texts: the file the samples were read from
    if isinstance(samples, str):
        raise NeuMuterError("samples must be a list of texts, got one string (wrap it: [text])")
    if isinstance(samples, torch.Tensor):
        samples = [samples.tolist()] if samples.dim() == 1 else samples.tolist()
    samples = list(samples)
    if not samples:
        raise NeuMuterError("no samples given: pass at least one text or token-id list")
    if all(isinstance(s, str) for s in samples):
        if tokenizer is None:
            raise NeuMuterError("samples are texts but no tokenizer was given")
        sequences = [list(tokenizer(s)["input_ids"]) for s in samples]
    else:
        sequences = [[int(t) for t in s] for s in samples]
    if max_length is not None:
        sequences = [s[:max_length] for s in sequences]
    short = [i for i, s in enumerate(sequences) if len(s) < min_tokens]
    if short:
        where = f" of {source}" if source else ""
        raise NeuMuterError(
            f"{len(short)} sample(s){where} (first indices {short[:5]}) have fewer than {min_tokens} tokens, "
            "which this metric needs"
        )
    return sequences


def check_samples(model, tokenizer, samples: Samples, min_tokens: int, fits_context: bool = True) -> None:
    """What every metric refuses, checked without a forward pass: fewer than ``min_tokens`` tokens, or more
    than the model's context (unless ``fits_context`` is False: perplexity scores a long text window by
    window). Callers check all their inputs up front with it, before minutes of scoring."""
    sequences = token_lists(tokenizer, samples, min_tokens)
    if fits_context:
        check_context(as_language_model(model), [len(seq) for seq in sequences], getattr(samples, "source", None))


def check_context(lm: LanguageModel, lengths: Sequence[int], source: str | None = None) -> None:
    """Refuse samples longer than the model's context in one line (positions past it do not exist)."""
    context = model_context_length(lm)
    too_long = [i for i, length in enumerate(lengths) if context is not None and length > context]
    if too_long:
        where = f" of {source}" if source else ""
        raise NeuMuterError(f"sample {too_long[0]}{where} is {lengths[too_long[0]]} tokens long, longer than the "
                            f"model's context of {context} ({len(too_long)} such sample(s)): cut them with max_length")


def check_batch_size(size: int) -> None:
    if size < 1:
        raise NeuMuterError(f"batch_size must be at least 1, got {size}")


def chunks(items: Sequence, size: int, desc: str | None = None) -> Iterator[Sequence]:
    check_batch_size(size)
    for start in progress(range(0, len(items), size), desc):
        yield items[start:start + size]


_SHOW_PROGRESS: ContextVar[bool] = ContextVar("neumuter_metrics_progress", default=False)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Show a progress bar (on stderr) for every batched pass of the metrics inside the block; the CLI
    turns them on for every command without ``--no-progress``. Library calls stay silent by default."""
    token = _SHOW_PROGRESS.set(enabled)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def showing_progress() -> bool:
    """Whether the block being run asked for progress bars (``progress_bars``)."""
    return _SHOW_PROGRESS.get()


def progress(iterable, desc: str | None):
    """``iterable``, with a bar named ``desc`` while ``progress_bars`` is on."""
    if desc is None or not showing_progress():
        return iterable
    return tqdm(iterable, desc=desc, total=len(iterable), unit="batch", leave=False)


@torch.no_grad()
def teacher_forced(lm: LanguageModel, sequences: Sequence[Sequence[int]], batch_size: int,
                    keep_argmax: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """Per sequence of T tokens: (token losses, argmax hits), each of length T - 1, where entry j is
    about predicting token j + 1 from tokens 0..j; ``keep_argmax`` adds the argmax tokens themselves.
    One right-padded forward per batch, the sequences batched longest first so that a batch pads to lengths
    close to its own (a row's scores do not depend on the rows it shares a batch with); results in the
    order given. The losses and argmax are taken row by row over each row's own positions, on contiguous
    [T - 1, vocab] logits: a cross-entropy over the batch's class-transposed logits ran 6x slower on a CPU
    (a quarter of the scoring time at a 49k vocabulary) and was less exact (3e-4 nats from a float64
    reference where the row-wise one is within 4e-5)."""
    check_context(lm, [len(seq) for seq in sequences])
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    results: list = [None] * len(sequences)
    for rows in chunks(order, batch_size, f"scoring {len(sequences)} texts"):
        batch = [sequences[i] for i in rows]
        padded = pad_batch(batch, 0).to(lm.device)  # pads sit under a zero attention mask: never scored
        ids = padded.input_ids
        logits = lm.logits(ids, padded.attention_mask)
        for row, (index, seq) in enumerate(zip(rows, batch)):
            predicted = logits[row, :len(seq) - 1].float()
            targets = ids[row, 1:len(seq)]
            losses = F.cross_entropy(predicted, targets, reduction="none")
            if not bool(torch.isfinite(losses).all()):
                raise NeuMuterError("the model's logits hold NaN or infinite values: no score can be computed from "
                                    "them (a damaged model or intervention)")
            argmax = predicted.argmax(-1)
            kept = (losses, argmax == targets, argmax) if keep_argmax else (losses, argmax == targets)
            results[index] = tuple(values.cpu() for values in kept)
    return results


@torch.no_grad()
def greedy_continuations(lm: LanguageModel, prompts: Sequence[Sequence[int]], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Greedy continuation of each prompt to its own length, in left-padded batches with the KV cache.

    Greedy decoding is deterministic, so a row's tokens do not depend on the batch it shares; each row
    leaves its batch once it has its length (``LanguageModel.greedy``), which forces the length (EOS cannot
    end it).
    A batch's longest prompt plus its longest continuation stays within the model's context: a row
    decoded past its own length must not run past the last position the model has.
    """
    check_batch_size(batch_size)
    check_context(lm, [len(prompt) + length for prompt, length in zip(prompts, lengths)])
    context = model_context_length(lm)
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], -len(prompts[i])), reverse=True)
    batches: list[list[int]] = []
    for i in order:  # lengths fall along ``order``: a batch's longest continuation is its first row's
        batch = batches[-1] if batches else []
        if batch and len(batch) < batch_size and (
                context is None or max(len(prompts[j]) for j in batch + [i]) + lengths[batch[0]] <= context):
            batch.append(i)
        else:
            batches.append([i])
    out: list[list[int]] = [[] for _ in prompts]
    for batch in progress(batches, f"greedy decoding of {len(prompts)} prefixes"):
        padded = pad_batch([prompts[i] for i in batch], 0, side="left").to(lm.device)
        ids, mask = padded.input_ids, padded.attention_mask
        new = lm.greedy(ids, mask, max(lengths[i] for i in batch), [lengths[i] for i in batch]).tolist()
        for i, tokens in zip(batch, new):
            out[i] = tokens[:lengths[i]]
    return out
