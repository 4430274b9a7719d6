"""Worlds: a model to unlearn, what to forget and how to score it, behind one interface (``World``) that
the demo, ``compare`` and the studies share. ``prepare_world(name, ...)`` builds one by name."""

from __future__ import annotations

from .base import World, public_scores
from .people import PeopleWorld, prepare_people_world
from .real import RealWorld, RealWorldConfig, prepare_real_world
from .tofu import TofuWorld, TofuWorldConfig, prepare_tofu_world

WORLD_NAMES = ("real", "people", "tofu-real")

__all__ = ["WORLD_NAMES", "PeopleWorld", "RealWorld", "RealWorldConfig", "World", "prepare_people_world",
           "prepare_real_world", "prepare_tofu_world", "public_scores", "TofuWorld", "TofuWorldConfig"]
