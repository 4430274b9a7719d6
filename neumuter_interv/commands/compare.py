"""``neumuter compare``: every unlearning method on a world (the people testbed or the real model), one
Table-2-shaped report."""

from __future__ import annotations

import time
from pathlib import Path

from ..comparison import ComparisonConfig, parse_methods, run_comparison
from ..methods.registry import METHODS
from ..worlds import WORLD_NAMES
from .neumuter_options import add_anchors_argument
from .tofu_options import add_tofu_arguments, tofu_config
from .utility import add_utility_argument, utility_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="run NeuMuter and the other unlearning methods on a world, "
                                                   "with one stop rule, and report them side by side")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated method names (default: all of {','.join(METHODS)})")
    parser.add_argument("--world", choices=WORLD_NAMES, default="people",
                        help="people (default): the testbed with its retrain oracle; real: SmolLM2-135M and the "
                             "licence it memorized (eleven methods with --utility: 80 minutes on 2 CPU cores, README); "
                             "tofu-real: SmolLM2-135M fine-tuned on fictitious people, with its retrain oracle")
    add_tofu_arguments(parser)
    parser.add_argument("--size", choices=["default", "tiny"], default="default",
                        help="'tiny' is the reduced world (and budgets) the tests use")
    add_anchors_argument(parser)
    add_utility_argument(parser)
    parser.add_argument("--max-epochs", type=int, help="epoch budget of every fine-tuning method "
                                                       "(default: 100; 20 with --size tiny)")
    parser.add_argument("--el-prefix-stride", type=int,
                        help="evaluate EL10 on every k-th prefix (default: the size preset's; 1 = exact)")
    parser.add_argument("--out", help="output directory (default: a fresh comparison-YYYYmmdd-HHMMSS directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    tofu = tofu_config(args)
    presets = {("people", "default"): ComparisonConfig.people, ("people", "tiny"): ComparisonConfig.tiny,
               ("real", "default"): ComparisonConfig.real, ("real", "tiny"): ComparisonConfig.real_tiny,
               ("tofu-real", "default"): lambda: ComparisonConfig.tofu_real(tofu),
               ("tofu-real", "tiny"): lambda: ComparisonConfig.tofu_real_tiny(tofu)}
    config = presets[args.world, args.size]()
    config.utility = utility_config(args)
    config.methods = parse_methods(args.methods)
    config.anchors_per_sample = args.anchors
    if args.max_epochs is not None:
        for budget in config.budgets.values():
            if "max_epochs" in budget:
                budget["max_epochs"] = args.max_epochs
    if args.el_prefix_stride is not None:
        config.el_prefix_stride = config.real.el_prefix_stride = config.tofu.el_prefix_stride = args.el_prefix_stride
    out = Path(args.out or time.strftime("comparison-%Y%m%d-%H%M%S"))
    run_comparison(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print((out / "comparison.md").read_text())
    return 0
