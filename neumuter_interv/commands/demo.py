"""``neumuter demo``: the embedded end-to-end run (testbed -> NeuMuter -> before/after/oracle report)."""

from __future__ import annotations

import time
from pathlib import Path

from ..demo import DemoConfig, run_demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="unlearn 32 fictitious people from a tiny GPT-Neo trained here, and report")
    parser.add_argument("--out", help="output directory (default: a fresh demo-YYYYmmdd-HHMMSS directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--size", choices=["default", "tiny"], default="default",
                        help="'tiny' is the reduced world the tests use")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of NeuMuter")
    parser.add_argument("--device", default="cpu",
                        help="where the world is built and NeuMuter runs: cpu (default: the README's numbers), "
                             "cuda, or auto; a GPU builds another world for the same seed, cached apart")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = DemoConfig.tiny() if args.size == "tiny" else DemoConfig()
    config.testbed = config.testbed.with_(seed=args.seed)
    config.neumuter.seed = args.seed
    config.device = args.device
    out = Path(args.out or time.strftime("demo-%Y%m%d-%H%M%S"))
    summary = run_demo(out, config, overwrite=args.overwrite, progress=not args.no_progress)
    print((out / "report.md").read_text())
    return 0 if summary else 1
