"""How sensitive is NeuMuter to its neighbours and to the size of the forget set? The paper's Table 8
(number of neighbours K), Table 10 (replacement ratio r) and Figure 2 (number of forget samples) on the
real model (default) or any other world (``--world``, with that world's options).

Each value of the studied setting runs NeuMuter once at the demo's settings otherwise, under the world's
stopping rule (Eq. 17 within the demo's budget; the smallest mask that meets it), and the frozen mask is scored with the world's metrics and,
with ``--utility DIR``, the paper's utility benchmarks.

    python recipes/sensitivity_study.py --study neighbours --values 1,2,3 --utility DIR --out results/sensitivity-k
    python recipes/sensitivity_study.py --study ratio --values 0.25,0.5,1 --utility DIR --out results/sensitivity-r
    python recipes/sensitivity_study.py --study forget-size --values 1,4,8,13 --utility DIR --out results/sensitivity-n

    python recipes/sensitivity_study.py --study forget-size --values 1,4,8,32 --world extraction \
        --extraction-data ../shared/data/knowledge-unlearning --out results/sensitivity-n-extraction

``forget-size`` forgets the first N samples of the world's forget set (``World.with_forget_subset``: the real
world's order is most memorized first, the extraction world's the forget file's) from the same model; the
others are scored as ``rest_of_forget`` MA, and no oracle is scored (it was trained without all of them). The
default real world has 13 memorized MIT-licence windows, the extraction world the 32 samples of its forget file
(the paper goes to 256 Pile samples, each size its own draw).
"""

from __future__ import annotations

import argparse
import time

from neumuter_interv.commands.world_options import world_settings
from neumuter_interv.comparison import ComparisonConfig
from neumuter_interv.demo import demo_inputs, prepare_world
from neumuter_interv.errors import NeuMuterError, run_script
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table, plot_tradeoff
from neumuter_interv.utility import UTILITY_COLUMNS, UtilityConfig
from neumuter_interv.validation import check_number
from neumuter_interv.worlds import WORLDS, public_scores
from neumuter_interv.worlds.registry import add_world_arguments

STUDIES = {"neighbours": ("K (neighbours per forget sample)", int, "Table 8"),
           "ratio": ("r (share of tokens rewritten)", float, "Table 10"),
           "forget-size": ("forget samples", int, "Figure 2")}
COLUMNS = [("forget_ma", "forget MA"), ("forget_el10", "forget EL10"), ("forgotten_fraction", "forgotten"),
           ("rest_of_forget_ma", "rest of document MA"), ("other_copies_ma", "other copies MA"),
           ("retain_ma", "retain MA"), ("heldout_ma", "held-out MA"), ("heldout_ppl", "general PPL"),
           *UTILITY_COLUMNS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=list(STUDIES), required=True)
    parser.add_argument("--values", required=True, help="comma-separated values of the studied setting")
    parser.add_argument("--world", choices=list(WORLDS), default="real")
    add_world_arguments(parser)
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--utility", metavar="DIR", help="also score the paper's utility benchmarks from DIR")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    label, kind, paper = STUDIES[args.study]
    try:
        values = [kind(v) for v in args.values.split(",")]
    except ValueError:
        raise NeuMuterError(f"--values must be {kind.__name__}s separated by commas, got {args.values!r}") from None
    utility = UtilityConfig(args.utility) if args.utility else None
    # the comparison's scoring settings (e.g. bf16 on the real world), the world's own options
    config = ComparisonConfig.for_world(args.world, args.size, world_settings(args), utility=utility).demo
    config.check()
    for value in values:  # each studied value through the setting's own check, before any work
        if args.study == "forget-size":
            check_number("a forget size", value, minimum=1, integer=True)
        else:
            NeuMuterConfig.from_dict({**config.neumuter.to_dict(),
                                      ("neighbours_per_sample" if args.study == "neighbours" else "replacement_ratio"): value})
    most = config.spec.max_forget(config.world_settings) if args.study == "forget-size" else None
    if most is not None and max(values) > most:
        raise NeuMuterError(f"the {args.world} world holds at most {most} forget samples; --values asks for "
                            f"{max(values)}")
    check_writable(args.out, args.overwrite, demo_inputs(config))
    start = time.perf_counter()
    world = prepare_world(config)
    if args.study == "forget-size" and max(values) > len(world.forget_texts):
        raise NeuMuterError(f"the world has {len(world.forget_texts)} forget samples; --values asks for {max(values)}")
    results = {"study": args.study, "world_name": args.world, "world": world.describe(),
               "settings": config.neumuter.to_dict(), "runs": {}}
    rows = []
    for value in values:
        run_world = world.with_forget_subset(value) if args.study == "forget-size" else world
        k = value if args.study == "neighbours" else config.neumuter.neighbours_per_sample
        ratio = value if args.study == "ratio" else config.neumuter.replacement_ratio
        neighbours = run_world.neighbours(run_world.forget_texts, k, ratio, config.neumuter.seed)
        run = NeuMuter(config.neumuter, stop_when=run_world.criterion, schedule=config.schedule,
                       log=lambda message: None).run(
            run_world.load_model(), run_world.tokenizer, run_world.forget_texts, neighbours)
        scores = public_scores(run_world.evaluate(run.frozen))
        results["runs"][str(value)] = {"original": public_scores(run_world.original), "after": scores,
                                       "neurons_muted": run.selection.neurons_muted,
                                       "unlearning_seconds": run.record.seconds}
        shown = [(key, header) for key, header in COLUMNS if key in run_world.original]
        rows.append([value, "original", *(run_world.original.get(key) for key, _ in shown), None, None])
        rows.append([value, "NeuMuter", *(scores.get(key) for key, _ in shown), run.selection.neurons_muted,
                     round(run.record.seconds, 1)])
        print(f"{label} = {value}: forget MA {scores['forget_ma']:.3f}, retain MA {scores.get('retain_ma')}", flush=True)
    results["seconds"] = time.perf_counter() - start
    header = [label, "model", *(h for _, h in shown), "muted", "unlearning (s)"]
    report = "\n\n".join([
        f"# Sensitivity to {label} (cf. {paper} of Hou et al., 2025), {args.world} world",
        f"World: {results['world']}. NeuMuter at the demo's settings, until Eq. 17 holds "
        f"({NeuMuter(config.neumuter, schedule=config.schedule, stop_when=world.criterion).budget()}, readout {config.neumuter.selection}); K = {config.neumuter.neighbours_per_sample} and r = "
        f"{config.neumuter.replacement_ratio} unless studied. {results['seconds'] / 60:.1f} minutes in all.",
        markdown_table(header, rows),
        "`sensitivity.png`: forget MA against retain MA and utility, one point per value.",
    ]) + "\n"
    points = {f"{args.study}={v}": results["runs"][str(v)]["after"] for v in values}
    panels = [(key, name) for key, name in (("retain_ma", "retain MA"), ("dialogue_f1", "dialogue F1"),
                                            ("pile_ppl", "Pile PPL"), ("heldout_ppl", "general PPL"))
              if all(key in p for p in points.values())][:3]
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "sensitivity.json", results)
        (staging / "sensitivity.md").write_text(report)
        plot_tradeoff(points, staging / "sensitivity.png", "forget MA (lower = more forgotten)", panels,
                      f"NeuMuter's sensitivity to {label}")
    print(report)


if __name__ == "__main__":
    run_script(main)
