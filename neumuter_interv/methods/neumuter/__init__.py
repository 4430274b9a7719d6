"""NeuMuter: config, localization loop, neuron selection, freezing, and the method object."""

from .config import NeuMuterConfig
from .localize import LocalizationResult, localize
from .method import NeuMuter, NeuMuterRun, load_run
from .schedule import CoefficientSchedule, localize_until_forgotten
from .selection import NeuronSet, Selection, freeze, select_neurons

__all__ = [
    "CoefficientSchedule",
    "localize_until_forgotten",
    "LocalizationResult",
    "NeuMuter",
    "NeuMuterConfig",
    "NeuMuterRun",
    "NeuronSet",
    "Selection",
    "freeze",
    "load_run",
    "localize",
    "select_neurons",
]
