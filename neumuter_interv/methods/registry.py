"""Every unlearning method by its short name, with the paper's default settings (Appendix B.4).

    method = make_method("sga", stop_when=criterion, max_epochs=50)

``make_method(name, **overrides)`` builds the method's settings dataclass with the overrides
(``stop_when``, ``device``, budgets, ...) and the method from it. NeuMuter takes its
``NeuMuterConfig`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import NeuMuterError
from .base import UnlearningMethod
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
        return self.method(self.settings(**overrides))


METHODS: dict[str, MethodEntry] = {
    "neumuter": MethodEntry(NeuMuter, NeuMuterConfig),
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


def make_method(name: str, **overrides: Any) -> UnlearningMethod:
    """The method called ``name`` with its default settings, changed by ``overrides``."""
    if name not in METHODS:
        raise NeuMuterError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    try:
        return METHODS[name].make(**overrides)
    except TypeError as error:
        raise NeuMuterError(f"bad setting for method {name!r}: {error}") from None
