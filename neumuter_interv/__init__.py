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

__all__ = [
    "ARCHITECTURES",
    "FFNArchitecture",
    "FrozenScaling",
    "HardConcreteGate",
    "HardConcreteParams",
    "LanguageModel",
    "NeuMuterError",
    "as_language_model",
    "describe_layers",
    "parse_layers",
    "register_architecture",
    "register_known_architectures",
]
