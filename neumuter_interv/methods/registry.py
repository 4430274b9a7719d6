"""Every unlearning method by its short name, with the paper's default settings (Appendix B.4).

    method = make_method("sga", stop_when=criterion, max_epochs=50)

``make_method(name, **overrides)`` builds the method's settings dataclass with the overrides
(``stop_when``, ``device``, budgets, ...) and the method from it. NeuMuter takes its
``NeuMuterConfig`` fields and ``schedule``; ``method.on_world(world)`` binds a method to a world's stop
criterion (and, for NeuMuter, its neighbours and anchors; for the attribution baseline, its reference
texts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import NeuMuterError
from .attribution import AttributionBaseline, AttributionSettings
from .base import MatchedTo, UnlearningMethod
from .finetune import FineTuneSettings
from .ga import GradientAscent, GradientAscentSettings
from .gradient_difference import GradientDifference, GradientDifferenceSettings
from .grun import GRUN, GRUNSettings
from .kl import KLMinimization, KLSettings
from .knowledge_neurons import KnowledgeNeurons, KnowledgeNeuronSettings
from .lunar import LUNAR, LUNARSettings
from .neumuter import NeuMuter, NeuMuterConfig
from .npo import NegativePreferenceOptimization, NPOSettings
from .sga import SelectiveGradientAscent, SelectiveGradientAscentSettings
from .task_arithmetic import TaskArithmetic, TaskArithmeticSettings
from .undial import Undial, UndialSettings


@dataclass(frozen=True)
class MethodEntry:
    method: type[UnlearningMethod]
    settings: type

    def make(self, **overrides: Any) -> UnlearningMethod:
        return self.method.from_overrides(self.settings, overrides)


METHODS: dict[str, MethodEntry] = {
    "neumuter": MethodEntry(NeuMuter, NeuMuterConfig),
    "attribution": MethodEntry(AttributionBaseline, AttributionSettings),  # at NeuMuter's share: after it
    "ga": MethodEntry(GradientAscent, GradientAscentSettings),
    "sga": MethodEntry(SelectiveGradientAscent, SelectiveGradientAscentSettings),
    "ta": MethodEntry(TaskArithmetic, TaskArithmeticSettings),
    "di": MethodEntry(Undial, UndialSettings),
    "ig": MethodEntry(KnowledgeNeurons, KnowledgeNeuronSettings),
    "gd": MethodEntry(GradientDifference, GradientDifferenceSettings),
    "kl": MethodEntry(KLMinimization, KLSettings),
    "npo": MethodEntry(NegativePreferenceOptimization, NPOSettings),
    "grun": MethodEntry(GRUN, GRUNSettings),
    "lunar": MethodEntry(LUNAR, LUNARSettings),
}


def method_budgets(fine_tuning_epochs: int = 100, ig_positions_per_sample: int | None = 8,
                   ig_max_neurons: int = 500, dtype: str = "float32") -> dict[str, dict]:
    """``make_method`` overrides per method for a comparison: one epoch budget for every fine-tuning method
    (full-batch, so one optimizer step per epoch; SGA one step on its most memorized sample) and the compute
    dtype of their forwards, and IG's attribution reduced to ``ig_positions_per_sample`` target tokens per
    sample (``None``: all, the paper's setting, which costs one gradient pass per token and layer). NeuMuter's
    budget is its schedule (``DemoConfig.schedule``); the attribution baseline mutes NeuMuter's share."""
    budgets = {name: {"max_epochs": fine_tuning_epochs, "dtype": dtype} for name, entry in METHODS.items()
               if issubclass(entry.settings, FineTuneSettings)}
    budgets["ig"] = {"positions_per_sample": ig_positions_per_sample, "max_neurons": ig_max_neurons}
    budgets["attribution"] = {"fraction": MatchedTo("neumuter", "neurons_muted_fraction"),
                              "layers": MatchedTo("neumuter", "layers")}
    return budgets


def real_model_budgets() -> dict[str, dict]:
    """The budgets that fit eleven methods on a 135M model into a CPU budget (the real and tofu-real worlds):
    10 epochs for the fine-tuning methods in bf16 autocast where the CPU has it (the forget set in one batch;
    GD, KL and GRUN pair it with 16 retain texts a step), IG on 1 target token per window, 5 integration
    steps, layers 1-, up to 460 neurons in rounds of 46 (460 = 1% of SmolLM2's FFN neurons, NeuMuter's
    share)."""
    budgets = method_budgets(fine_tuning_epochs=10, ig_positions_per_sample=1, ig_max_neurons=460, dtype="auto")
    budgets["ig"].update(steps=5, neurons_per_round=46, layers="1-")
    for name in ("gd", "kl", "grun"):  # the forget set in one batch, the 40 retain texts cycled 16 a step
        budgets[name]["batch_size"] = 16
    return budgets


def make_method(name: str, **overrides: Any) -> UnlearningMethod:
    """The method called ``name`` with its default settings, changed by ``overrides``."""
    if name not in METHODS:
        raise NeuMuterError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    try:
        return METHODS[name].make(**overrides)
    except TypeError as error:
        raise NeuMuterError(f"bad setting for method {name!r}: {error}") from None
