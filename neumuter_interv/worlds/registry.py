"""Every world by name, with what the demo, ``compare``, the recipes and the CLI need to know about it.

A world registers one ``WorldSpec``: its settings at each size, how to build it, the demo's settings for it
(NeuMuter's, the stopping target), the comparison's budgets, the targets its demo reports, its report title
and its own command-line options. Callers look a world up (``world_spec(name)``) instead of branching on its
name, so adding a world is its own module (with its ``SPEC``) and one entry in ``_register_built_in`` (or
``register_world`` from outside the package: a plugin or a test).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import NeuMuterError
from .base import WorldSpec

WORLDS: dict[str, WorldSpec] = {}


def register_world(spec: WorldSpec) -> WorldSpec:
    """Make ``spec`` available by name to the demo, ``compare``, the studies and the CLI (built after it)."""
    if not isinstance(spec, WorldSpec):
        raise NeuMuterError(f"register_world takes a WorldSpec, got {type(spec).__name__}")
    WORLDS[spec.name] = spec
    return spec


def world_spec(name: str) -> WorldSpec:
    """The registered world ``name``, or a ``NeuMuterError`` listing the worlds there are."""
    if name not in WORLDS:
        raise NeuMuterError(f"unknown world {name!r}: choose from {', '.join(WORLDS)}")
    return WORLDS[name]


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """Every registered world's own options (a world's options are refused with another world: ``check_options``,
    which reads their defaults from ``world_option_defaults``)."""
    for spec in WORLDS.values():
        spec.add_arguments(parser)
    parser.set_defaults(world_option_defaults={dest: parser.get_default(dest) for spec in WORLDS.values()
                                               for dest in spec.options})


def check_options(args: argparse.Namespace, parser_defaults: Mapping[str, Any], world: str) -> None:
    """Refuse, in one line, an option of another world given on the command line."""
    for spec in WORLDS.values():
        if spec.name == world:
            continue
        for dest in spec.options:
            if dest not in world_spec(world).options and getattr(args, dest, None) != parser_defaults.get(dest):
                flag = "--" + dest.replace("_", "-")
                raise NeuMuterError(f"{flag} applies to the {spec.name} world, not the {world} world")


def _register_built_in() -> None:
    from . import extraction, people, real, tofu

    for module in (real, people, tofu, extraction):  # one entry per world, in the order --world lists them
        register_world(module.SPEC)


_register_built_in()
