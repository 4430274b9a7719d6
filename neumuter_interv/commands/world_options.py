"""The options ``demo`` and ``compare`` share: which world (any registered one, with its own options), at
which size, and NeuMuter's KL anchors, forget term, KL weight and training budget."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..methods.neumuter.config import FORGET_LOSSES
from ..validation import check_number
from ..worlds import WORLDS
from ..worlds.base import SIZES
from ..worlds.registry import add_world_arguments, check_options


def add_world_options(parser, default: str) -> None:
    """``--world`` (the registry's worlds, ``default`` first), every world's own options, ``--size``,
    ``--anchors``, ``--forget-loss``, ``--kl-weight`` and ``--neumuter-epochs``."""
    parser.add_argument("--world", choices=list(WORLDS), default=default,
                        help="; ".join(f"{name}{' (default)' if name == default else ''}: {spec.help}"
                                       for name, spec in WORLDS.items()))
    add_world_arguments(parser)
    parser.add_argument("--size", choices=SIZES, default="default",
                        help="'tiny' is the reduced world (and budgets) the tests use")
    parser.add_argument("--anchors", type=int, default=0, metavar="N",
                        help="add N other memorized windows to each forget sample's neighbours in NeuMuter's KL term "
                             "(never the scored retain windows; the run is then marked with a dagger, as it uses "
                             "retained text)")
    parser.add_argument("--forget-loss", choices=FORGET_LOSSES,
                        help="NeuMuter's forget term (default: the world's preset): ascent (Eq. 13's bounded gradient "
                             "ascent) or distill (the KL from DI's teacher, a departure from the paper: "
                             "docs/specificity.md)")
    parser.add_argument("--kl-weight", type=float, metavar="W",
                        help="NeuMuter's KL weight (default: the world's preset)")
    parser.add_argument("--neumuter-epochs", type=int, metavar="N",
                        help="NeuMuter's budget under the stopping rule, in epochs (default: the world's preset, 48 "
                             "on the real world; anchored runs need more: docs/specificity.md)")


def apply_neumuter_options(args, config) -> None:
    """``--anchors``, ``--forget-loss``, ``--kl-weight`` and ``--neumuter-epochs`` onto a ``DemoConfig``
    (refused in one line, before any work, where one is out of range)."""
    config.neumuter.anchors_per_sample = args.anchors
    if args.forget_loss is not None:
        config.neumuter.forget_loss = args.forget_loss
    if args.kl_weight is not None:
        check_number("--kl-weight", args.kl_weight, minimum=0)
        config.neumuter.kl_weight = args.kl_weight
    if args.neumuter_epochs is not None:
        config.schedule = replace(config.schedule, stage_epochs=args.neumuter_epochs)


def world_settings(args) -> Any:
    """The chosen world's settings from its options; an option of another world is refused in one line."""
    check_options(args, args.world_option_defaults, args.world)
    return WORLDS[args.world].settings_from(args, args.size)
