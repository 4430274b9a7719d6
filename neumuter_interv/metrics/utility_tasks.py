"""Utility (Appendix B): continuations (LAMBADA), multiple choice (PubMedQA), dialogue F1 and CE."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from ..data import model_context_length
from ..errors import NeuMuterError
from ..lm import LanguageModel, as_language_model
from .core import greedy_continuations, teacher_forced
from .tofu import _answer_tokens, _encode_qa, normalize_answer


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
    for (_, greedy, argmax), (_, word) in zip(teacher_forced(lm, [q + a for q, a in encoded], batch_size,
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
    reply tokens of all dialogues; ``reply_losses``: each dialogue's reply-token losses, so that a caller that
    scores several sets in one call (one decoding loop) can average each set's. ``generations``: the replies.
    Prompts are cut from the left to fit ``max_length`` tokens (default: the model's context) with the reply.
    """
    lm = as_language_model(model)
    encoded = _encode_pairs(lm, tokenizer, prompts, references, max_length)
    scored = _answer_tokens(lm, encoded, batch_size)
    reply_losses = [losses for losses, _ in scored]
    ce = float(torch.cat(reply_losses).mean())
    limit = max_length or model_context_length(lm)
    contexts = [q[-(limit - max_new_tokens):] if limit else q for q, _ in encoded]
    generated = greedy_continuations(lm, contexts, [max_new_tokens] * len(contexts), batch_size)
    end_ids = set(lm.end_token_ids())
    replies = []
    for tokens in generated:
        cut = next((i for i, token in enumerate(tokens) if token in end_ids), len(tokens))
        replies.append(tokenizer.decode(tokens[:cut], skip_special_tokens=True).split(DIALOGUE_TURN_MARKER)[0])
    f1 = torch.tensor([unigram_f1(reply, reference) for reply, reference in zip(replies, references)])
    return {"f1": f1, "ce": ce, "reply_losses": reply_losses, "generations": replies}
