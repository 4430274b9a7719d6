"""Worlds: a model to unlearn, what to forget and how to score it, behind one interface (``World``) that
the demo, ``compare`` and the studies share, each registered by name (``registry``: ``world_spec(name)``
gives what the harness needs to know of it; ``register_world`` adds one)."""

from __future__ import annotations

from .base import World, public_scores
from .extraction import ExtractionWorld, ExtractionWorldConfig, prepare_extraction_world
from .people import PeopleWorld, prepare_people_world
from .real import RealWorld, RealWorldConfig, prepare_real_world
from .registry import WORLDS, WorldSpec, register_world, world_spec
from .tofu import TofuWorld, TofuWorldConfig, prepare_tofu_world

__all__ = ["WORLDS", "ExtractionWorld", "ExtractionWorldConfig", "PeopleWorld", "RealWorld", "RealWorldConfig", "World", "WorldSpec", "prepare_extraction_world", "prepare_people_world",
           "prepare_real_world", "prepare_tofu_world", "public_scores", "register_world", "TofuWorld",
           "TofuWorldConfig", "world_spec"]
