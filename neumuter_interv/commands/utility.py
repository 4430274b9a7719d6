"""``--utility DIR`` and its sample sizes, shared by ``eval``, ``demo`` and ``compare``."""

from __future__ import annotations

from ..errors import NeuMuterError
from ..utility import UtilityConfig


def add_utility_argument(parser) -> None:
    parser.add_argument("--utility", metavar="DIR",
                        help="also score the paper's utility benchmarks (Pile/WikiText PPL, LAMBADA, PubMedQA, "
                             "dialogue F1/CE) from a knowledge-unlearning validation_data directory")
    parser.add_argument("--utility-samples", type=int, metavar="N",
                        help="rows per utility task (default: UtilityConfig's, a few minutes on a CPU)")


def utility_config(args) -> UtilityConfig | None:
    """The utility settings the arguments ask for (None without ``--utility``), checked now."""
    if not args.utility:
        if args.utility_samples is not None:
            raise NeuMuterError("--utility-samples needs --utility DIR")
        return None
    if args.utility_samples is None:
        return UtilityConfig(args.utility)
    n = args.utility_samples
    return UtilityConfig(args.utility, ppl_texts=n, lambada_samples=n, pubmedqa_samples=n, dialogues_per_set=n)
