"""neumuter_interv: NeuMuter machine unlearning (Hou et al., ACL Findings 2025) as pyvene interventions."""

import contextlib
import io

# pyvene 0.1.8 prints an install hint for its optional nnsight backend on import; keep our output clean.
with contextlib.redirect_stdout(io.StringIO()):
    import pyvene  # noqa: F401

from .architectures import (  # noqa: E402
    ARCHITECTURES,
    FFNArchitecture,
    describe_layers,
    parse_layers,
    register_architecture,
    register_known_architectures,
)
from .errors import NeuMuterError
from .hard_concrete import HardConcreteParams
from .interventions import FrozenScaling, HardConcreteGate
from .lm import LanguageModel, as_language_model

register_known_architectures()

from .intervenable import attach  # noqa: E402
from .loading import load_causal_lm  # noqa: E402
from .methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig, NeuMuterRun, load_run  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "CoefficientSchedule",
    "FFNArchitecture",
    "FrozenScaling",
    "HardConcreteGate",
    "HardConcreteParams",
    "LanguageModel",
    "NeuMuter",
    "NeuMuterConfig",
    "NeuMuterError",
    "NeuMuterRun",
    "as_language_model",
    "attach",
    "describe_layers",
    "load_causal_lm",
    "load_run",
    "parse_layers",
    "register_architecture",
    "register_known_architectures",
]
