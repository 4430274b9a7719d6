"""Every evaluation metric of the project (paper Appendix B, TOFU, Table 14), one module per family:
``memorization`` (MA, EL_n, Eq. 17), ``privacy`` (losses, perplexity, MIA), ``tofu`` (truth ratio, forget
quality, model utility), ``utility_tasks`` (LAMBADA, PubMedQA, dialogue), ``generation`` (Table 14), all on
``core`` (inputs, batching, progress, the teacher-forced and greedy passes).

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

from .core import QARecord, Samples, check_samples, progress_bars, showing_progress
from .generation import generation_examples, greedy_texts
from .memorization import (
    extraction_likelihood,
    forgetting_thresholds,
    forgotten_fraction,
    forgotten_mask,
    memorization_accuracy,
    ngram_overlap,
    ngrams,
    suffix_extraction,
    teacher_forced_scores,
)
from .privacy import loss_mia, mia_from_losses, perplexity, sample_losses
from .tofu import (
    answer_probability,
    forget_quality,
    model_utility,
    normalize_answer,
    qa_exposure,
    qa_rouge_recall,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_score,
)
from .utility_tasks import (
    DIALOGUE_TURN_MARKER,
    continuation_scores,
    dialogue_scores,
    lambada_accuracy,
    multiple_choice_accuracy,
    split_last_word,
    split_last_word_of,
    unigram_f1,
)

__all__ = ["QARecord", "Samples", "check_samples", "progress_bars", "showing_progress", "extraction_likelihood",
           "forgetting_thresholds", "forgotten_fraction", "forgotten_mask", "memorization_accuracy", "suffix_extraction",
           "ngram_overlap", "ngrams", "teacher_forced_scores", "loss_mia", "mia_from_losses", "perplexity",
           "sample_losses", "answer_probability", "forget_quality", "model_utility", "normalize_answer",
           "qa_exposure", "qa_rouge_recall", "rouge_l_recall", "truth_ratio", "truth_ratio_score",
           "DIALOGUE_TURN_MARKER", "continuation_scores", "dialogue_scores", "lambada_accuracy",
           "multiple_choice_accuracy", "split_last_word", "split_last_word_of", "unigram_f1",
           "generation_examples", "greedy_texts"]
