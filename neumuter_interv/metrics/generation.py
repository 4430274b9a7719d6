"""Generation: greedy continuations of prompts and the examples of Table 14."""

from __future__ import annotations

from collections.abc import Sequence

from ..lm import as_language_model
from ..validation import check_number
from .core import Samples, greedy_continuations, token_lists


def greedy_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[str]:
    """The greedy continuation of each prompt, ``max_new_tokens`` tokens long (an end-of-text token cannot
    end it early), decoded without special tokens; interventions apply at every position."""
    check_number("max_new_tokens", max_new_tokens, minimum=1, integer=True)
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, prompts, min_tokens=1)
    generated = greedy_continuations(lm, sequences, [max_new_tokens] * len(sequences), batch_size)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]


def generation_examples(model, tokenizer, samples: Samples, *, prefix_length: int = 100,
                        max_new_tokens: int | None = 100, batch_size: int = 8) -> list[dict]:
    """Table 14: the first ``prefix_length`` tokens as prompt, a greedy continuation as long as the
    true suffix (capped at ``max_new_tokens``), side by side. Each dict has ``prefix``,
    ``generation``, ``true_suffix`` (texts), their ids, and ``token_matches`` (share of positions where
    generation and suffix agree)."""
    lm = as_language_model(model)
    sequences = token_lists(tokenizer, samples, min_tokens=prefix_length + 1)
    suffixes = [seq[prefix_length:prefix_length + max_new_tokens] if max_new_tokens else seq[prefix_length:]
                for seq in sequences]
    generated = greedy_continuations(lm, [seq[:prefix_length] for seq in sequences],
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
