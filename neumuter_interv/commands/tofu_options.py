"""The options of the tofu-real world that ``neumuter demo`` and ``neumuter compare`` share."""

from __future__ import annotations

from ..errors import NeuMuterError
from ..worlds import TofuWorldConfig
from ..worlds.tofu import FORGET_PERCENTS


def add_tofu_arguments(parser) -> None:
    parser.add_argument("--base", help="tofu-real world: the pretrained model to fine-tune, a directory or Hub id "
                                       "(default: the packaged SmolLM2-135M)")
    parser.add_argument("--forget-percent", type=int, choices=FORGET_PERCENTS, default=10,
                        help="tofu-real world: TOFU's split, the share of the fictitious people to forget")


def tofu_config(args) -> TofuWorldConfig:
    """The tofu-real world's settings from the command line (``--size tiny`` needs ``--base``)."""
    if args.world != "tofu-real":
        if args.base or args.forget_percent != 10:
            raise NeuMuterError("--base and --forget-percent apply to the tofu-real world only")
        return TofuWorldConfig()
    if args.size == "tiny":
        if not args.base:
            raise NeuMuterError("--size tiny on the tofu-real world needs --base, a small pretrained model")
        return TofuWorldConfig.tiny(args.base, forget_percent=args.forget_percent)
    return TofuWorldConfig(base=args.base, forget_percent=args.forget_percent)
