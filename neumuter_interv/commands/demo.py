"""``neumuter demo``: the end-to-end run on a world (default: SmolLM2-135M forgets a licence it memorized;
``--world people``: the embedded testbed with its retrain oracle)."""

from __future__ import annotations

import time
from pathlib import Path

from ..demo import DemoConfig, run_demo
from ..errors import NeuMuterError
from ..worlds import WORLD_NAMES
from .neumuter_options import add_anchors_argument
from .tofu_options import add_tofu_arguments, tofu_config
from .utility import add_utility_argument, utility_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="make SmolLM2-135M forget the MIT licence it memorized (or, with "
                                                "--world people, 32 fictitious people a tiny model learned) and report")
    parser.add_argument("--world", choices=WORLD_NAMES, default="real",
                        help="real (default): SmolLM2-135M and texts on this machine; people: the embedded testbed; "
                             "tofu-real: SmolLM2-135M fine-tuned on fictitious people, with its retrain oracle")
    add_tofu_arguments(parser)
    parser.add_argument("--forget", nargs="+", metavar="PATH",
                        help="real world: files, directories or globs of the document to forget (default: the MIT "
                             "licence as installed packages ship it)")
    parser.add_argument("--out", help="output directory (default: a fresh demo-YYYYmmdd-HHMMSS directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--size", choices=["default", "tiny"], default="default",
                        help="'tiny' is the reduced world the tests use")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world (people) and of NeuMuter")
    parser.add_argument("--device", default="cpu",
                        help="where the world is built and NeuMuter runs: cpu (default: the README's numbers), "
                             "cuda, or auto; a GPU builds another people world for the same seed, cached apart")
    parser.add_argument("--curve-points", type=int, default=6, metavar="N",
                        help="points of the operating-point curve (curve.json, curve.png; about 50-80 s each on the "
                             "real world on 2 CPU cores); 0 skips it")
    add_anchors_argument(parser)
    add_utility_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.forget and args.world != "real":
        raise NeuMuterError("--forget applies to the real world only: the people world forgets its forget people")
    tofu = tofu_config(args)
    if args.world == "people":
        config = DemoConfig.tiny() if args.size == "tiny" else DemoConfig.people()
        config.testbed = config.testbed.with_(seed=args.seed)
    elif args.world == "tofu-real":
        config = DemoConfig.tofu_real(tofu)
        config.tofu.seed = args.seed
        if args.size == "tiny":
            config.schedule.stage_epochs, config.schedule.check_every = 2, 1
    else:
        config = DemoConfig.real_tiny() if args.size == "tiny" else DemoConfig()
        if args.forget:
            config.real.forget = tuple(args.forget)
    config.neumuter.seed = args.seed
    config.anchors_per_sample = args.anchors
    config.curve_points = args.curve_points
    config.utility = utility_config(args)
    config.device = args.device
    out = Path(args.out or time.strftime("demo-%Y%m%d-%H%M%S"))
    summary = run_demo(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print((out / "report.md").read_text())
    return 0 if summary else 1
