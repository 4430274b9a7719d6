"""Evaluate an (unlearned) model on a forget set with every metric the reports show.

One function, ``evaluate``, used by ``neumuter demo``, ``neumuter eval`` and ``neumuter compare``,
so that NeuMuter and its rivals are scored by the same code. Names of the returned keys are the
ones ``metrics.json`` promises: ``forget_ma``, ``forget_el10``, ``retain_ma``, ``heldout_ppl``,
``mia_distance``, ``forget_quality``, ``forgotten_fraction`` (all rates are fractions in [0, 1]), and,
where the utility files are given, the paper's utility scores (``utility.evaluate_utility``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from . import metrics
from .errors import NeuMuterError
from .lm import as_language_model, autocast
from .utility import UtilityData, check_utility, evaluate_utility


@dataclass
class EvaluationSet:
    """The texts an evaluation needs.

    ``heldout_texts`` are samples of the forget set's kind that no model trained on (the Eq. 17
    thresholds and the MIA reference); ``general_texts`` measure utility as held-out perplexity.
    """

    forget_texts: Sequence[str]
    heldout_texts: Sequence[str]
    general_texts: Sequence[str] = ()
    retain_texts: Sequence[str] = ()
    forget_qa: Sequence[Mapping] = ()
    retain_qa: Sequence[Mapping] = ()
    ma_groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # more groups scored by MA: "<name>_ma"
    settings: dict = field(default_factory=lambda: {"el_n": 10, "el_prefix_stride": 1, "batch_size": 32})
    utility: UtilityData | None = None  # the paper's utility benchmarks (``utility``), where their files are given

    def __post_init__(self):
        if not self.forget_texts:
            raise NeuMuterError("the evaluation needs a non-empty forget set")
        if not self.heldout_texts:
            raise NeuMuterError("the evaluation needs held-out texts (for the Eq. 17 thresholds)")
        if self.utility is not None:  # cached scores are keyed by the settings: the utility data is part of them
            self.settings = {**self.settings, "utility": self.utility.fingerprint}

    @classmethod
    def from_testbed(cls, testbed, utility: UtilityData | None = None, **settings) -> EvaluationSet:
        return cls(testbed.forget_texts, testbed.heldout_people_texts, testbed.general_heldout_texts,
                   testbed.retain_texts, testbed.forget_qa, testbed.retain_qa, {},
                   {"el_n": 10, "el_prefix_stride": 1, "batch_size": 32, **settings}, utility)

    def check(self, model, tokenizer) -> None:
        """Refuse, before any forward pass, a sample too short for EL_n (n + 1 tokens) or MA, or longer than
        the model's context, a general text too short for perplexity, and what a utility task cannot score
        (``utility.check_utility``); the message names the file when the texts came from one (``data.Texts``).
        ``thresholds``, the first scoring of every command, calls it."""
        n = self.settings["el_n"]
        for texts, min_tokens in ((self.forget_texts, n + 1), (self.heldout_texts, n + 1), (self.retain_texts, 2)):
            if texts:
                metrics.check_samples(model, tokenizer, texts, min_tokens)
        if self.general_texts:
            metrics.check_samples(model, tokenizer, self.general_texts, 2, fits_context=False)
        if self.utility is not None:
            check_utility(model, tokenizer, self.utility)

    @property
    def el_key(self) -> str:
        return f"el{self.settings['el_n']}"


def scoring_precision(model, data: EvaluationSet):
    """The compute dtype every forward of an evaluation runs in: ``settings["dtype"]`` (``float32`` by
    default; ``auto`` is bf16 autocast where the hardware has it, what the real-world studies use to fit a
    CPU budget), as ``lm.autocast``."""
    return autocast(data.settings.get("dtype", "float32"), as_language_model(model).device)


def thresholds(model, tokenizer, data: EvaluationSet) -> dict[str, float]:
    """Eq. 17: average MA and EL_n of the model on held-out samples, once every input of ``data`` is checked."""
    data.check(model, tokenizer)
    with scoring_precision(model, data):
        return metrics.forgetting_thresholds(model, tokenizer, data.heldout_texts, n=data.settings["el_n"],
                                         batch_size=data.settings["batch_size"],
                                         prefix_stride=data.settings["el_prefix_stride"])


def scores_by_text(model, tokenizer, groups: Sequence[Sequence[str]], batch_size: int) -> dict[str, tuple]:
    """(MA, mean loss) of every distinct text of ``groups``, teacher-forced once in one batched pass: a world's
    groups overlap (the retain set's halves are MA groups of their own, held-out text is both the MIA reference
    and a group)."""
    distinct = list(dict.fromkeys(text for texts in groups for text in texts))
    if not distinct:
        return {}
    return dict(zip(distinct, zip(*metrics.teacher_forced_scores(model, tokenizer, distinct, batch_size=batch_size))))


def evaluate(model, tokenizer, data: EvaluationSet, forgetting_thresholds: Mapping[str, float],
             oracle_forget_losses: Sequence[float] | None = None,
             oracle_truth_ratios: Sequence[float] | None = None) -> dict:
    """Every metric of the report for one model; per-sample values are kept under ``per_sample``. Forget
    quality is the KS p-value against the oracle's forget truth ratios where the QA records carry TOFU's
    probes and those ratios are given (TOFU's definition), else against the oracle's forget losses."""
    with scoring_precision(model, data):
        return _evaluate(model, tokenizer, data, forgetting_thresholds, oracle_forget_losses, oracle_truth_ratios)


def _evaluate(model, tokenizer, data: EvaluationSet, forgetting_thresholds: Mapping[str, float],
              oracle_forget_losses: Sequence[float] | None, oracle_truth_ratios: Sequence[float] | None) -> dict:
    n, batch, stride = data.settings["el_n"], data.settings["batch_size"], data.settings["el_prefix_stride"]
    forget = data.forget_texts
    by_text = scores_by_text(model, tokenizer, [forget, data.heldout_texts, data.retain_texts,
                                                *data.ma_groups.values()], batch)

    def scores_of(texts) -> tuple:
        """(MA, mean loss) per text of ``texts``, from the one pass."""
        scores = [by_text[text] for text in texts]
        return torch.stack([ma for ma, _ in scores]), torch.stack([loss for _, loss in scores])

    ma, forget_losses = scores_of(forget)
    el = metrics.extraction_likelihood(model, tokenizer, forget, n, batch_size=batch, prefix_stride=stride)
    mia = metrics.mia_from_losses(forget_losses, scores_of(data.heldout_texts)[1])
    result = {
        "forget_ma": float(ma.mean()),
        f"forget_{data.el_key}": float(el.mean()),
        "forgotten_fraction": metrics.forgotten_fraction(ma, el, forgetting_thresholds, n),
        "mia_distance": mia["mean_distance"],
        "forget_loss": float(mia["forget_losses"].mean()),
    }
    if data.retain_texts:
        result["retain_ma"] = float(scores_of(data.retain_texts)[0].mean())
    for name, texts in data.ma_groups.items():
        if texts:
            result[f"{name}_ma"] = float(scores_of(texts)[0].mean())
    if data.general_texts:
        result["heldout_ppl"] = metrics.perplexity(model, tokenizer, data.general_texts, batch_size=batch)
    if data.utility is not None:
        result.update(evaluate_utility(model, tokenizer, data.utility))
    for name, records in (("forget_qa", data.forget_qa), ("retain_qa", data.retain_qa)):
        if records:
            exposure = metrics.qa_exposure(model, tokenizer, list(records), batch_size=batch)
            result[f"{name}_exposed"] = float(exposure["contains"].mean())
            result[f"{name}_probability"] = float(exposure["probability"].mean())
    result["per_sample"] = {"forget_ma": ma.tolist(), f"forget_{data.el_key}": el.tolist(),
                            "forget_loss": mia["forget_losses"].tolist()}
    if has_truth_probes(data.forget_qa) and has_truth_probes(data.retain_qa):
        tofu = _tofu_scores(model, tokenizer, data, result["retain_qa_probability"], result.get("heldout_ppl"))
        result["per_sample"]["forget_truth_ratio"] = tofu.pop("forget_truth_ratios")
        result.update(tofu)
    result.update(_forget_quality(result["per_sample"], oracle_forget_losses, oracle_truth_ratios))
    return result


def _forget_quality(per_sample: Mapping, oracle_losses: Sequence[float] | None,
                    oracle_ratios: Sequence[float] | None) -> dict:
    """The KS p-value against the oracle: on the forget truth ratios where both models have them (TOFU's,
    with its log10 as Table 13 reports it), else on the per-sample forget losses; nothing without an oracle."""
    if oracle_ratios is not None and "forget_truth_ratio" in per_sample:
        quality = metrics.forget_quality(per_sample["forget_truth_ratio"], oracle_ratios)
        return {"forget_quality": quality, "log10_forget_quality": math.log10(max(quality, 1e-300))}
    if oracle_losses is not None:
        return {"forget_quality": metrics.forget_quality(per_sample["forget_loss"], oracle_losses)}
    return {}


def has_truth_probes(records: Sequence[Mapping]) -> bool:
    """Whether QA records carry TOFU's probes: a ``paraphrased`` answer and ``perturbed`` (wrong) answers."""
    return bool(records) and all("paraphrased" in r and r.get("perturbed") for r in records)


def _tofu_scores(model, tokenizer, data: EvaluationSet, retain_probability: float, general_ppl: float | None) -> dict:
    """TOFU's metrics (Maini et al., 2024; the paper's Appendix D, Eq. 19): forget and retain truth ratios,
    retain ROUGE-L recall, and model utility, the harmonic mean of the retain scores (answer probability
    as ``qa_exposure`` measured it, ROUGE-L recall, truth ratio) and, where ``settings["reference_ppl"]`` gives the pretrained base's perplexity on the general
    texts, ``min(1, reference / perplexity)`` in place of TOFU's real-author and world-fact sets (which no
    package ships offline)."""
    batch = data.settings["batch_size"]

    def ratios(records) -> list[float]:
        return metrics.truth_ratio(model, tokenizer, [r["question"] for r in records],
                                   [r["paraphrased"] for r in records], [r["perturbed"] for r in records],
                                   batch_size=batch).tolist()

    forget, retain = ratios(data.forget_qa), ratios(data.retain_qa)
    components = {
        "retain_probability": retain_probability,
        "retain_rouge_l": float(metrics.qa_rouge_recall(model, tokenizer, data.retain_qa, batch_size=batch).mean()),
        "retain_truth_ratio": metrics.truth_ratio_score(retain, forget_set=False),
    }
    reference = data.settings.get("reference_ppl")
    if reference is not None and general_ppl is not None:
        components["general_ppl_ratio"] = min(1.0, reference / general_ppl)
    return {"forget_truth_ratios": forget, "forget_truth_ratio": metrics.truth_ratio_score(forget, forget_set=True),
            **components, "model_utility": metrics.model_utility(components)}
