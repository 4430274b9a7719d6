"""``neumuter compare``: every unlearning method on a world (the people testbed, the real model or any
registered world), one Table-2-shaped report."""

from __future__ import annotations

import time
from pathlib import Path

from ..comparison import ComparisonConfig, parse_methods, run_comparison
from ..methods.registry import METHODS
from .utility import add_utility_argument, utility_config
from .world_options import add_world_options, apply_neumuter_options, world_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="run NeuMuter and the other unlearning methods on a world, "
                                                   "with one stop rule, and report them side by side")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated method names (default: all of {','.join(METHODS)}; the attribution "
                             "baseline mutes NeuMuter's share, so it follows neumuter)")
    add_world_options(parser, default="people")
    add_utility_argument(parser)
    parser.add_argument("--max-epochs", type=int, help="epoch budget of every fine-tuning method "
                                                       "(default: the world's; 100 on the people world)")
    parser.add_argument("--el-prefix-stride", type=int,
                        help="evaluate EL10 on every k-th prefix (default: the size preset's; 1 = exact)")
    parser.add_argument("--out", help="output directory (default: a fresh comparison-YYYYmmdd-HHMMSS directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = ComparisonConfig.for_world(args.world, args.size, world_settings(args), utility_config(args))
    config.methods = parse_methods(args.methods)
    apply_neumuter_options(args, config.demo)
    if args.max_epochs is not None:
        for budget in config.budgets.values():
            if "max_epochs" in budget:
                budget["max_epochs"] = args.max_epochs
    if args.el_prefix_stride is not None:
        config.demo.el_prefix_stride = args.el_prefix_stride
        if hasattr(config.demo.world_settings, "el_prefix_stride"):
            config.demo.world_settings.el_prefix_stride = args.el_prefix_stride
    out = Path(args.out or time.strftime("comparison-%Y%m%d-%H%M%S"))
    run_comparison(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print((out / "comparison.md").read_text())
    return 0
