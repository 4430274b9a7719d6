"""``neumuter demo``: the end-to-end run on a world (default: SmolLM2-135M forgets a licence it memorized;
``--world people``: the embedded testbed with its retrain oracle; any registered world)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..demo import DemoConfig, run_demo
from .utility import add_utility_argument, utility_config
from .world_options import add_world_options, apply_neumuter_options, world_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="make SmolLM2-135M forget the MIT licence it memorized (or, with "
                                                "--world, another world's forget set) and report")
    add_world_options(parser, default="real")
    parser.add_argument("--out", help="output directory (default: a fresh demo-YYYYmmdd-HHMMSS directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world (where it has one) and of NeuMuter")
    parser.add_argument("--device", default="cpu",
                        help="where the world is built and NeuMuter runs: cpu (default: the README's numbers), "
                             "cuda, or auto; a GPU builds another people world for the same seed, cached apart")
    parser.add_argument("--curve-points", type=int, default=6, metavar="N",
                        help="points of the operating-point curve (curve.json, curve.png; about 50-80 s each on the "
                             "real world on 2 CPU cores); 0 skips it")
    add_utility_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    settings = world_settings(args)
    config = DemoConfig.for_world(args.world, args.size, settings)
    seed_setting = config.spec.seed_setting
    if seed_setting is not None:
        config.world_settings = dataclasses.replace(config.world_settings, **{seed_setting: args.seed})
    config.neumuter.seed = args.seed
    apply_neumuter_options(args, config)
    config.curve_points = args.curve_points
    config.utility = utility_config(args)
    config.device = args.device
    out = Path(args.out or time.strftime("demo-%Y%m%d-%H%M%S"))
    summary = run_demo(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print((out / "report.md").read_text())
    return 0 if summary else 1
