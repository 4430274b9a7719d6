"""Question answering: exposure, TOFU's truth ratio, forget quality and model utility (Maini et al., 2024)."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import torch
from scipy.stats import ks_2samp

from ..errors import NeuMuterError
from ..lm import LanguageModel, as_language_model
from .core import QARecord, greedy_continuations, teacher_forced


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
    per_sequence = teacher_forced(lm, [q + a for q, a in encoded], batch_size)
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
    generated = greedy_continuations(lm, [q for q, _ in encoded], lengths, batch_size)
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
    generated = greedy_continuations(lm, prompts, [max_new_tokens] * len(prompts), batch_size)
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip().split("\n")[0] for ids in generated]
    return torch.tensor([rouge_l_recall(text, answer) for text, (_, answer) in zip(texts, pairs)])


def model_utility(scores: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of its component scores (each in [0, 1]; any zero makes it 0)."""
    values = list(scores.values())
    if not values or any(not 0 <= v <= 1 for v in values):
        raise NeuMuterError(f"model utility needs component scores in [0, 1], got {dict(scores)}")
    return 0.0 if min(values) == 0 else len(values) / sum(1 / v for v in values)
