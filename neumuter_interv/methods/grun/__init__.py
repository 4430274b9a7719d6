"""GRUN-like gated representation unlearning (Ren et al., 2025) as a pyvene intervention."""

from .config import GRUNSettings
from .intervention import GatedReFT
from .method import GRUN, attach_gated_reft

__all__ = ["GRUN", "GRUNSettings", "GatedReFT", "attach_gated_reft"]
