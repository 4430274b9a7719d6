"""LUNAR-like activation redirection (Shen et al., NeurIPS 2025): a retrained FFN output projection."""

from .intervention import ProjectionEdit
from .method import LUNAR, LUNARSettings

__all__ = ["LUNAR", "LUNARSettings", "ProjectionEdit"]
