"""Every evaluation metric of the project, in one place (paper Appendix B, TOFU, Table 14).

All functions take a model (a Hugging Face causal LM, a ``pyvene.IntervenableModel`` or a
``LanguageModel``), a tokenizer, and samples given either as texts or as token ids (a list of id lists,
or a 2-D tensor without padding; then the tokenizer may be ``None``). They run in batches under
``torch.no_grad`` and return fractions in [0, 1] for every rate.

Definitions follow the knowledge-unlearning project (Jang et al., 2023; github.com/joeljang/
knowledge-unlearning, ``models/Neo_Model.py``), which the paper cites for MA, EL and the forgetting
criterion:

- MA (Eq. 15): fraction of positions t = 1..T-1 where argmax p(. | x_<t) == x_t. The reference makes
  T - 1 ``generate`` calls of one token; one teacher-forced forward gives the same argmaxes.
- EL_n (Eq. 16): for every prefix length t = 1..T-n, greedily continue x_<t up to length T and score
  Overlap_n = (number of n-grams of the generation, with multiplicity, that occur among the true
  suffix's n-grams) / (number of n-grams of the true suffix); EL_n = sum over t / (T - n).
  (``validation_el``: ``p_tp = [g for g in p_ngram if g in set(l_ngram)]; len(p_tp) / len(l_ngram)``.
  Generation and suffix have the same length, so dividing by the generation's n-gram count is the
  same number.)
- Forgotten (Eq. 17): MA and EL_n at or under their averages over held-out text.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp
from tqdm.auto import tqdm

from .data import model_context_length, pad_batch
from .errors import NeuMuterError
from .lm import LanguageModel, as_language_model
from .validation import check_number

Samples = Sequence[str] | Sequence[Sequence[int]] | torch.Tensor
QARecord = tuple[str, str] | Mapping[str, str]


# ---------------------------------------------------------------------------------------------
# Input handling and batching
# ---------------------------------------------------------------------------------------------

def _token_lists(tokenizer, samples: Samples, min_tokens: int, max_length: int | None = None) -> list[list[int]]:
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
    sequences = _token_lists(tokenizer, samples, min_tokens)
    if fits_context:
        _check_context(as_language_model(model), [len(seq) for seq in sequences], getattr(samples, "source", None))


def _check_context(lm: LanguageModel, lengths: Sequence[int], source: str | None = None) -> None:
    """Refuse samples longer than the model's context in one line (positions past it do not exist)."""
    context = model_context_length(lm)
    too_long = [i for i, length in enumerate(lengths) if context is not None and length > context]
    if too_long:
        where = f" of {source}" if source else ""
        raise NeuMuterError(f"sample {too_long[0]}{where} is {lengths[too_long[0]]} tokens long, longer than the "
                            f"model's context of {context} ({len(too_long)} such sample(s)): cut them with max_length")


def _check_batch_size(size: int) -> None:
    if size < 1:
        raise NeuMuterError(f"batch_size must be at least 1, got {size}")


def _chunks(items: Sequence, size: int, desc: str | None = None) -> Iterator[Sequence]:
    _check_batch_size(size)
    for start in _progress(range(0, len(items), size), desc):
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


def _progress(iterable, desc: str | None):
    """``iterable``, with a bar named ``desc`` while ``progress_bars`` is on."""
    if desc is None or not showing_progress():
        return iterable
    return tqdm(iterable, desc=desc, total=len(iterable), unit="batch", leave=False)


@torch.no_grad()
def _teacher_forced(lm: LanguageModel, sequences: Sequence[Sequence[int]], batch_size: int,
                    keep_argmax: bool = False) -> list[tuple[torch.Tensor, ...]]:
    """Per sequence of T tokens: (token losses, argmax hits), each of length T - 1, where entry j is
    about predicting token j + 1 from tokens 0..j; ``keep_argmax`` adds the argmax tokens themselves.
    One right-padded forward per batch."""
    _check_context(lm, [len(seq) for seq in sequences])
    results = []
    for batch in _chunks(sequences, batch_size, f"scoring {len(sequences)} texts"):
        padded = pad_batch(batch, 0).to(lm.device)  # pads sit under a zero attention mask
        ids, mask = padded.input_ids, padded.attention_mask
        logits = lm.logits(ids, mask)[:, :-1].float()
        targets = ids[:, 1:]
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        argmax = logits.argmax(-1)
        hits = argmax == targets
        if not bool(torch.isfinite(losses[mask[:, 1:].bool()]).all()):  # pads may hold anything
            raise NeuMuterError("the model's logits hold NaN or infinite values: no score can be computed from them "
                                "(a damaged model or intervention)")
        for row, seq in enumerate(batch):
            kept = (losses, hits, argmax) if keep_argmax else (losses, hits)
            results.append(tuple(values[row, :len(seq) - 1].cpu() for values in kept))
    return results


@torch.no_grad()
def _greedy_continuations(lm: LanguageModel, prompts: Sequence[Sequence[int]], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Greedy continuation of each prompt to its own length, in left-padded batches with the KV cache.

    Greedy decoding is deterministic, so decoding a batch to its longest length and cutting each row
    gives every row its own result. ``LanguageModel.greedy`` forces the length (EOS cannot end it).
    A batch's longest prompt plus its longest continuation stays within the model's context: a row
    decoded past its own length must not run past the last position the model has.
    """
    _check_batch_size(batch_size)
    _check_context(lm, [len(prompt) + length for prompt, length in zip(prompts, lengths)])
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
    for batch in _progress(batches, f"greedy decoding of {len(prompts)} prefixes"):
        padded = pad_batch([prompts[i] for i in batch], 0, side="left").to(lm.device)
        ids, mask = padded.input_ids, padded.attention_mask
        new = lm.greedy(ids, mask, max(lengths[i] for i in batch)).tolist()
        for i, tokens in zip(batch, new):
            out[i] = tokens[:lengths[i]]
    return out


# ---------------------------------------------------------------------------------------------
# Memorization: MA (Eq. 15), EL_n (Eq. 16), forgetting criterion (Eq. 17)
# ---------------------------------------------------------------------------------------------

def memorization_accuracy(model, tokenizer, samples: Samples, *, batch_size: int = 8, max_length: int | None = None) -> torch.Tensor:
    """MA per sample (Eq. 15): share of positions t = 1..T-1 whose greedy next token equals x_t.

    One teacher-forced forward per batch replaces the reference's T - 1 single-token ``generate`` calls.
    """
    lm = as_language_model(model)
    sequences = _token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    return torch.stack([hits.float().mean() for _, hits in _teacher_forced(lm, sequences, batch_size)])


def teacher_forced_scores(model, tokenizer, samples: Samples, *, batch_size: int = 8,
                          max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(MA, mean loss) per sample from the same single forward: what a memorization scan needs."""
    lm = as_language_model(model)
    sequences = _token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    scored = _teacher_forced(lm, sequences, batch_size)
    return (torch.stack([hits.float().mean() for _, hits in scored]),
            torch.stack([losses.mean() for losses, _ in scored]))


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
    sequences = _token_lists(tokenizer, samples, min_tokens=n + 1, max_length=max_length)
    _check_context(lm, [len(seq) for seq in sequences])
    end_ids = set(lm.end_token_ids())
    predicted = [hits.tolist() for _, hits in _teacher_forced(lm, sequences, batch_size)]  # [j]: x_j+1 from x_<=j

    def run_end(i: int, t: int) -> int:
        """The first u >= t whose greedy next token is not x_u (len(x) when the model reproduces the rest)."""
        sequence, u = sequences[i], t
        while u < len(sequence) and predicted[i][u - 1] and sequence[u] not in end_ids:
            u += 1
        return u

    jobs = [(i, t, run_end(i, t)) for i, seq in enumerate(sequences) for t in range(1, len(seq) - n + 1, prefix_stride)]
    to_decode = sorted({(i, u) for i, _, u in jobs if u < len(sequences[i])})
    decoded = dict(zip(to_decode, _greedy_continuations(
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


# ---------------------------------------------------------------------------------------------
# Losses: per-sample loss, perplexity, loss-based MIA (Appendix B.3)
# ---------------------------------------------------------------------------------------------

def sample_losses(model, tokenizer, samples: Samples, *, batch_size: int = 8, max_length: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample (positions 1..T-1)."""
    lm = as_language_model(model)
    sequences = _token_lists(tokenizer, samples, min_tokens=2, max_length=max_length)
    return torch.stack([losses.mean() for losses, _ in _teacher_forced(lm, sequences, batch_size)])


def perplexity(model, tokenizer, texts: Samples, *, batch_size: int = 8, context_length: int | None = None) -> float:
    """Token-weighted perplexity exp(sum of token losses / number of predicted tokens) over all texts.

    Texts longer than the context (default: the model's ``max_position_embeddings``/``n_positions``)
    are cut into consecutive non-overlapping windows, each scored on its own; one-token windows are
    dropped since they predict nothing.
    """
    lm = as_language_model(model)
    window = context_length or model_context_length(lm)
    sequences = _token_lists(tokenizer, texts, min_tokens=1)
    pieces = []
    for seq in sequences:
        step = window or len(seq)
        pieces += [seq[i:i + step] for i in range(0, len(seq), step) if len(seq[i:i + step]) >= 2]
    if not pieces:
        raise NeuMuterError("perplexity needs at least one text of two or more tokens")
    per_piece = _teacher_forced(lm, pieces, batch_size)
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


# ---------------------------------------------------------------------------------------------
# Question answering: exposure, TOFU truth ratio and forget quality
# ---------------------------------------------------------------------------------------------

def _qa_pairs(records: Sequence[QARecord]) -> list[tuple[str, str]]:
    records = list(records)
    if not records:
        raise NeuMuterError("no QA records given")
    pairs = []
    for record in records:
        if isinstance(record, Mapping):
            if "question" not in record or "answer" not in record:
                raise NeuMuterError(f"a QA record needs 'question' and 'answer' keys, got {sorted(record)}")
            pairs.append((record["question"], record["answer"]))
        else:
            question, answer = record
            pairs.append((question, answer))
    return pairs


def _encode_qa(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Question ids (with the tokenizer's special tokens) and answer ids (none), kept apart so the
    answer span is exact. The answer is appended verbatim: put the separator (e.g. a leading space)
    into the question template or the answer."""
    question_ids = list(tokenizer(question)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not question_ids or not answer_ids:
        raise NeuMuterError(f"empty question or answer after tokenization: {question!r} / {answer!r}")
    return question_ids, answer_ids


def _answer_tokens(lm: LanguageModel, encoded: Sequence[tuple[list[int], list[int]]],
                   batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per (context, answer) pair, the teacher-forced losses and argmax hits of the answer tokens given the
    context (one forward of context + answer)."""
    per_sequence = _teacher_forced(lm, [q + a for q, a in encoded], batch_size)
    return [(losses[-len(a):], hits[-len(a):]) for (losses, hits), (_, a) in zip(per_sequence, encoded)]


def _answer_stats(lm: LanguageModel, encoded: Sequence[tuple[list[int], list[int]]], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced mean answer-token loss and answer-token accuracy given the question."""
    scored = _answer_tokens(lm, encoded, batch_size)
    return (torch.stack([losses.mean() for losses, _ in scored]),
            torch.stack([hits.float().mean() for _, hits in scored]))


def normalize_answer(text: str, remove_articles: bool = False) -> str:
    """Lower case, punctuation removed, whitespace collapsed (SQuAD-style); ``remove_articles`` also drops
    "a", "an" and "the", as SQuAD's F1 (and knowledge-unlearning's dialogue F1) does."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    if remove_articles:
        text = re.sub(r"\b(a|an|the)\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def qa_exposure(model, tokenizer, records: Sequence[QARecord], *, batch_size: int = 8,
                max_new_tokens: int | None = None) -> dict[str, torch.Tensor | list[str]]:
    """How much of each QA record the model still gives away.

    Returns per record: ``contains`` (1.0 when the normalized greedy answer to the question contains
    the normalized true answer), ``token_accuracy`` (teacher-forced argmax accuracy on the answer
    tokens), ``probability`` (exp(-mean answer-token loss), TOFU's length-normalized P(a|q)) and the
    decoded ``generations``. The greedy answer is ``max_new_tokens`` long, by default exactly as many
    tokens as the true answer (the strictest reading: the model must say it right away).
    """
    lm = as_language_model(model)
    encoded = [_encode_qa(tokenizer, q, a) for q, a in _qa_pairs(records)]
    losses, accuracy = _answer_stats(lm, encoded, batch_size)
    lengths = [max_new_tokens or len(a) for _, a in encoded]
    generated = _greedy_continuations(lm, [q for q, _ in encoded], lengths, batch_size)
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    answers = [tokenizer.decode(a, skip_special_tokens=True) for _, a in encoded]
    contains = torch.tensor([normalize_answer(a) in normalize_answer(t) for a, t in zip(answers, texts)])
    return {"contains": contains.float(), "token_accuracy": accuracy, "probability": torch.exp(-losses),
            "generations": texts}


def answer_probability(model, tokenizer, questions: Sequence[str], answers: Sequence[str], *,
                       batch_size: int = 8) -> torch.Tensor:
    """Length-normalized P(a|q) = exp(-mean answer-token loss) per (question, answer) pair."""
    if len(questions) != len(answers):
        raise NeuMuterError(f"{len(questions)} questions but {len(answers)} answers")
    encoded = [_encode_qa(tokenizer, q, a) for q, a in _qa_pairs(list(zip(questions, answers)))]
    losses, _ = _answer_stats(as_language_model(model), encoded, batch_size)
    return torch.exp(-losses)


def truth_ratio(model, tokenizer, questions: Sequence[str], paraphrased_answers: Sequence[str],
                perturbed_answers: Sequence[Sequence[str]], *, batch_size: int = 8) -> torch.Tensor:
    """TOFU truth ratio per question: R = mean over perturbed answers of P(a_pert|q)^(1/|a|), divided
    by P(a_para|q)^(1/|a|) (TOFU paper, Maini et al. 2024). R near 1: the model no longer prefers the
    (paraphrased) truth. TOFU's code uses the geometric mean over perturbed answers and the reciprocal
    ratio; ``forget_quality`` is unaffected by the reciprocal (the KS test is rank based)."""
    if not (len(questions) == len(paraphrased_answers) == len(perturbed_answers)):
        raise NeuMuterError("questions, paraphrased_answers and perturbed_answers must have the same length")
    if any(len(p) == 0 for p in perturbed_answers):
        raise NeuMuterError("every question needs at least one perturbed answer")
    paraphrased = answer_probability(model, tokenizer, questions, paraphrased_answers, batch_size=batch_size)
    flat_q = [q for q, perturbed in zip(questions, perturbed_answers) for _ in perturbed]
    flat_a = [a for perturbed in perturbed_answers for a in perturbed]
    flat = answer_probability(model, tokenizer, flat_q, flat_a, batch_size=batch_size).tolist()
    means, start = [], 0
    for perturbed in perturbed_answers:
        means.append(sum(flat[start:start + len(perturbed)]) / len(perturbed))
        start += len(perturbed)
    return torch.tensor(means) / paraphrased


def truth_ratio_score(ratios: torch.Tensor, forget_set: bool) -> float:
    """TOFU aggregate: forget set mean(min(R, 1/R)); other sets mean(max(0, 1 - R))."""
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    if forget_set:
        return float(torch.minimum(ratios, 1 / ratios).mean())
    return float((1 - ratios).clamp(min=0).mean())


def forget_quality(unlearned_values: Sequence[float] | torch.Tensor, oracle_values: Sequence[float] | torch.Tensor) -> float:
    """TOFU forget quality: the p-value of a two-sample KS test between a per-sample statistic of the
    unlearned model and of the retrained oracle on the forget set (higher is better; the paper reports
    log10). The statistic is the truth ratio when perturbed answers exist, otherwise the per-sample
    loss from ``sample_losses`` (or the answer loss, -log ``answer_probability``)."""
    a = torch.as_tensor(unlearned_values, dtype=torch.float64).flatten().tolist()
    b = torch.as_tensor(oracle_values, dtype=torch.float64).flatten().tolist()
    if not a or not b:
        raise NeuMuterError("forget_quality needs at least one value from each model")
    return float(ks_2samp(a, b).pvalue)


def rouge_l_recall(generated: str, reference: str) -> float:
    """ROUGE-L recall (Lin, 2004), as TOFU scores a generated answer: the longest common subsequence of
    the normalized words of ``generated`` and ``reference``, over the number of reference words."""
    candidate, truth = normalize_answer(generated).split(), normalize_answer(reference).split()
    if not truth:
        raise NeuMuterError(f"the reference answer {reference!r} has no words")
    previous = [0] * (len(candidate) + 1)
    for word in truth:
        current = [0]
        for j, other in enumerate(candidate):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(truth)


def qa_rouge_recall(model, tokenizer, records: Sequence[QARecord], *, batch_size: int = 8,
                    max_new_tokens: int = 32) -> torch.Tensor:
    """Per QA record, ROUGE-L recall of the model's greedy answer (``max_new_tokens``, leading whitespace
    dropped, cut at the next line break as TOFU cuts at the end of the answer) against the true answer."""
    lm = as_language_model(model)
    pairs = _qa_pairs(records)
    prompts = [list(tokenizer(question)["input_ids"]) for question, _ in pairs]
    generated = _greedy_continuations(lm, prompts, [max_new_tokens] * len(prompts), batch_size)
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip().split("\n")[0] for ids in generated]
    return torch.tensor([rouge_l_recall(text, answer) for text, (_, answer) in zip(texts, pairs)])


def model_utility(scores: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of its component scores (each in [0, 1]; any zero makes it 0)."""
    values = list(scores.values())
    if not values or any(not 0 <= v <= 1 for v in values):
        raise NeuMuterError(f"model utility needs component scores in [0, 1], got {dict(scores)}")
    return 0.0 if min(values) == 0 else len(values) / sum(1 / v for v in values)


# ---------------------------------------------------------------------------------------------
# Utility (Appendix B): continuations (LAMBADA), multiple choice (PubMedQA), dialogue F1 and CE
# ---------------------------------------------------------------------------------------------

def _encode_pairs(lm: LanguageModel, tokenizer, contexts: Sequence[str], continuations: Sequence[str],
                  max_length: int | None) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per pair, the context cut from the LEFT so that both fit in
    ``max_length`` tokens (default: the model's context): knowledge-unlearning keeps the last
    ``input_length`` tokens of context + continuation, the part nearest to what is scored."""
    if len(contexts) != len(continuations):
        raise NeuMuterError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    limit = max_length or model_context_length(lm)
    encoded = [_encode_qa(tokenizer, context, continuation) for context, continuation in zip(contexts, continuations)]
    if limit is None:
        return encoded
    too_long = [i for i, (_, a) in enumerate(encoded) if len(a) >= limit]
    if too_long:
        raise NeuMuterError(f"continuation {too_long[0]} is {len(encoded[too_long[0]][1])} tokens, no shorter than "
                            f"the {limit} tokens a scored sequence may have")
    return [(q[-(limit - len(a)):], a) for q, a in encoded]


def continuation_scores(model, tokenizer, contexts: Sequence[str], continuations: Sequence[str], *,
                        batch_size: int = 8, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Per (context, continuation) pair, from one teacher-forced forward of both: ``log_likelihood``, the
    sum of the continuation tokens' log-probabilities given the context (lm-eval's ``loglikelihood``),
    ``greedy``, 1.0 when every continuation token is the argmax at its position (lm-eval's ``is_greedy``),
    and ``tokens``, the continuation's length. The continuation is appended verbatim: put its separator
    (a leading space) into it."""
    lm = as_language_model(model)
    scored = _answer_tokens(lm, _encode_pairs(lm, tokenizer, contexts, continuations, max_length), batch_size)
    return {"log_likelihood": torch.stack([-losses.sum() for losses, _ in scored]),
            "greedy": torch.stack([hits.all().float() for _, hits in scored]),
            "tokens": torch.tensor([len(losses) for losses, _ in scored])}


def split_last_word(text: str) -> tuple[str, str]:
    """LAMBADA's target as knowledge-unlearning splits it (``input_to_target``): the last space-separated
    word; returns (the text before it, " " + the word)."""
    return split_last_word_of(text, "a LAMBADA text")


def split_last_word_of(text: str, where: str) -> tuple[str, str]:
    """``split_last_word``, refusing a text without a last word in a message that starts with ``where``."""
    words = text.split(" ")
    if len(words) < 2 or not words[-1]:
        raise NeuMuterError(f"{where} needs a context and a last word after a space, got {text[:60]!r}")
    return " ".join(words[:-1]), " " + words[-1]


def lambada_accuracy(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8,
                     max_length: int | None = None) -> torch.Tensor:
    """Per text, 1.0 when the model predicts its last word given the rest (Paperno et al., 2016), scored as
    knowledge-unlearning's ``lambada_evaluation`` does: with teacher forcing, every token of the word is the
    argmax at its position, or the argmax tokens decode to the word up to case, punctuation and articles."""
    lm = as_language_model(model)
    contexts, words = zip(*(split_last_word(text) for text in texts))
    encoded = _encode_pairs(lm, tokenizer, contexts, words, max_length)
    hits = []
    for (_, greedy, argmax), (_, word) in zip(_teacher_forced(lm, [q + a for q, a in encoded], batch_size,
                                                              keep_argmax=True), encoded):
        predicted, truth = tokenizer.decode(argmax[-len(word):].tolist()), tokenizer.decode(word)
        hits.append(bool(greedy[-len(word):].all()) or normalize_answer(predicted, True) == normalize_answer(truth, True))
    return torch.tensor(hits, dtype=torch.float32)


def multiple_choice_accuracy(model, tokenizer, contexts: Sequence[str], choices: Sequence[Sequence[str]],
                             answers: Sequence[int], *, batch_size: int = 8,
                             max_length: int | None = None) -> torch.Tensor:
    """Per question, 1.0 when the choice with the highest log-likelihood given the context (summed over its
    tokens, not length-normalized) is the answer: knowledge-unlearning's ``classification_verbalizer`` and
    lm-eval's ``acc`` for multiple choice. Choices carry their own leading space (" yes")."""
    if not (len(contexts) == len(choices) == len(answers)):
        raise NeuMuterError("contexts, choices and answers must have the same length")
    for index, (options, answer) in enumerate(zip(choices, answers)):
        if not options or not 0 <= int(answer) < len(options):
            raise NeuMuterError(f"question {index}: answer index {answer} is not one of its {len(options)} choices")
    flat_contexts = [context for context, options in zip(contexts, choices) for _ in options]
    flat_choices = [option for options in choices for option in options]
    scores = continuation_scores(model, tokenizer, flat_contexts, flat_choices, batch_size=batch_size,
                                 max_length=max_length)["log_likelihood"].tolist()
    hits, start = [], 0
    for options, answer in zip(choices, answers):
        chosen = max(range(len(options)), key=lambda k: scores[start + k])
        hits.append(chosen == int(answer))
        start += len(options)
    return torch.tensor(hits, dtype=torch.float32)


def unigram_f1(prediction: str, reference: str) -> float:
    """SQuAD's unigram F1 after ``normalize_answer`` with articles removed (knowledge-unlearning's
    ``_f1_score``): 0 when no word is shared."""
    predicted, truth = normalize_answer(prediction, True).split(), normalize_answer(reference, True).split()
    shared = sum((Counter(predicted) & Counter(truth)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(truth)
    return 2 * precision * recall / (precision + recall)


DIALOGUE_TURN_MARKER = "\nUser "


def dialogue_scores(model, tokenizer, prompts: Sequence[str], references: Sequence[str], *,
                    max_new_tokens: int = 32, batch_size: int = 8, max_length: int | None = None) -> dict:
    """The paper's dialogue metrics (Appendix B, after knowledge-unlearning's ``dialog_evaluation``).

    ``f1`` per dialogue: ``unigram_f1`` of the model's greedy reply to the prompt (``max_new_tokens``
    tokens, cut at the next turn marker "\\nUser " and at an end-of-sequence token) against the reference
    reply. ``ce``: the cross-entropy of the reference reply's tokens given the prompt, averaged over all
    reply tokens of all dialogues. ``generations``: the replies. Prompts are cut from the left to fit
    ``max_length`` tokens (default: the model's context) with the reply.
    """
    lm = as_language_model(model)
    encoded = _encode_pairs(lm, tokenizer, prompts, references, max_length)
    scored = _answer_tokens(lm, encoded, batch_size)
    ce = float(torch.cat([losses for losses, _ in scored]).mean())
    limit = max_length or model_context_length(lm)
    contexts = [q[-(limit - max_new_tokens):] if limit else q for q, _ in encoded]
    generated = _greedy_continuations(lm, contexts, [max_new_tokens] * len(contexts), batch_size)
    end_ids = set(lm.end_token_ids())
    replies = []
    for tokens in generated:
        cut = next((i for i, token in enumerate(tokens) if token in end_ids), len(tokens))
        replies.append(tokenizer.decode(tokens[:cut], skip_special_tokens=True).split(DIALOGUE_TURN_MARKER)[0])
    f1 = torch.tensor([unigram_f1(reply, reference) for reply, reference in zip(replies, references)])
    return {"f1": f1, "ce": ce, "generations": replies}


# ---------------------------------------------------------------------------------------------
# Generation examples (Table 14)
# ---------------------------------------------------------------------------------------------

def greedy_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[str]:
    """The greedy continuation of each prompt, ``max_new_tokens`` tokens long (an end-of-text token cannot
    end it early), decoded without special tokens; interventions apply at every position."""
    check_number("max_new_tokens", max_new_tokens, minimum=1, integer=True)
    lm = as_language_model(model)
    sequences = _token_lists(tokenizer, prompts, min_tokens=1)
    generated = _greedy_continuations(lm, sequences, [max_new_tokens] * len(sequences), batch_size)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]


def generation_examples(model, tokenizer, samples: Samples, *, prefix_length: int = 100,
                        max_new_tokens: int | None = 100, batch_size: int = 8) -> list[dict]:
    """Table 14: the first ``prefix_length`` tokens as prompt, a greedy continuation as long as the
    true suffix (capped at ``max_new_tokens``), side by side. Each dict has ``prefix``,
    ``generation``, ``true_suffix`` (texts), their ids, and ``token_matches`` (share of positions where
    generation and suffix agree)."""
    lm = as_language_model(model)
    sequences = _token_lists(tokenizer, samples, min_tokens=prefix_length + 1)
    suffixes = [seq[prefix_length:prefix_length + max_new_tokens] if max_new_tokens else seq[prefix_length:]
                for seq in sequences]
    generated = _greedy_continuations(lm, [seq[:prefix_length] for seq in sequences],
                                      [len(s) for s in suffixes], batch_size)
    examples = []
    for seq, suffix, gen in zip(sequences, suffixes, generated):
        examples.append({
            "prefix": tokenizer.decode(seq[:prefix_length]),
            "generation": tokenizer.decode(gen),
            "true_suffix": tokenizer.decode(suffix),
            "prefix_ids": seq[:prefix_length],
            "generation_ids": gen,
            "suffix_ids": suffix,
            "token_matches": sum(g == s for g, s in zip(gen, suffix)) / len(suffix),
        })
    return examples
