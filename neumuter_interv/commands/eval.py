"""``neumuter eval``: score any causal LM (optionally with a saved intervention) with the demo's metrics."""

from __future__ import annotations

from ..data import read_texts
from ..evaluation import EvaluationSet, evaluate, thresholds
from ..intervenable import load
from ..loading import check_same_model, check_vocabulary, load_causal_lm, recorded_fingerprint
from ..methods.neumuter.method import load_gates, load_ranking_discount
from ..operating_curve import gate_curve_counts, operating_curve
from ..output import check_writable, output_directory, write_json
from ..report import markdown_table, plot_operating_curve
from ..utility import load_utility
from ..validation import check_number
from .utility import add_utility_argument, utility_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model (+ intervention) on forget / held-out files")
    parser.add_argument("--model", required=True, help="local directory or Hub id of a causal LM")
    parser.add_argument("--intervention", help="a saved intervention directory (e.g. RUN_DIR/intervention)")
    parser.add_argument("--forget", required=True, help="forget samples (.txt/.jsonl/.csv)")
    parser.add_argument("--heldout", required=True, help="samples of the same kind never trained on (Eq. 17 thresholds)")
    parser.add_argument("--general", help="general held-out text for perplexity")
    parser.add_argument("--retain", help="retained samples (memorization that should survive)")
    parser.add_argument("--oracle", help="a model retrained without the forget set (forget quality)")
    parser.add_argument("--curve", metavar="RUN_DIR",
                        help="also draw the operating-point curve of a NeuMuter run's trained gates (curve.json, "
                             "curve.png): the metrics as the muted count grows along their ranking")
    parser.add_argument("--curve-points", type=int, default=8, metavar="N", help="points of --curve (default 8)")
    parser.add_argument("--column", default="text")
    parser.add_argument("--el-prefix-stride", type=int, default=1, help="evaluate EL10 on every k-th prefix (1 = exact)")
    add_utility_argument(parser)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    files = {"forget": args.forget, "held-out": args.heldout, "general": args.general, "retain": args.retain}
    check_writable(args.out, args.overwrite, {"--model": args.model, "--intervention": args.intervention,
                                              "--oracle": args.oracle, "--utility": args.utility, "--curve": args.curve,
                                              **{f"--{k}": v for k, v in files.items()}})
    check_number("--el-prefix-stride", args.el_prefix_stride, minimum=1, integer=True)
    check_number("--curve-points", args.curve_points, minimum=1, integer=True)
    texts = {what: read_texts(path, args.column, what) if path else () for what, path in files.items()}
    utility = utility_config(args)
    data = EvaluationSet(texts["forget"], texts["held-out"], texts["general"], texts["retain"],
                         settings={"el_n": 10, "el_prefix_stride": args.el_prefix_stride, "batch_size": 32},
                         utility=load_utility(utility) if utility else None)
    base, tokenizer = load_causal_lm(args.model)
    data.check(base, tokenizer)
    check_same_model(base, {made: recorded_fingerprint(made) for made in (args.intervention, args.curve) if made},
                     args.model)
    model = load(args.intervention, base) if args.intervention else base  # does it fit? before any scoring
    gates = load_gates(args.curve, base) if args.curve else None
    discount = load_ranking_discount(args.curve, *gates) if gates else None
    oracle = load_causal_lm(args.oracle)[0] if args.oracle else None
    if oracle is not None:
        check_vocabulary(oracle, tokenizer, args.oracle)  # it is scored with the model's tokenizer
    limits = thresholds(base, tokenizer, data)
    oracle_losses = evaluate(oracle, tokenizer, data, limits)["per_sample"]["forget_loss"] if oracle else None
    scores = evaluate(model, tokenizer, data, limits, oracle_losses)
    curve = None
    if gates is not None:
        log_alpha, run_config = gates
        counts = gate_curve_counts(log_alpha, run_config.max_fraction, args.curve_points)
        curve = operating_curve(base, tokenizer, log_alpha, run_config.hard_concrete, data, limits, [0, *counts],
                                ranking=run_config.ranking, discount=discount)
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "metrics.json", {"thresholds": limits, **scores})
        if curve is not None:
            write_json(staging / "curve.json", curve)
            if any(point["neurons_muted"] for point in curve):
                plot_operating_curve(curve, staging / "curve.png", "Operating points along the run's gates",
                                     limits["ma"])
    print(markdown_table(["metric", "value"], [[k, v] for k, v in scores.items() if k != "per_sample"]))
    return 0
