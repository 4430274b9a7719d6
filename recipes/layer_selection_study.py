"""Which layers to mask? The paper's Table 3 study, on the real model (default), the extraction world or the people
testbed.

For each layer spec, NeuMuter runs with the same settings under the world's stopping rule (Appendix B.4:
Eq. 17 for the target share of forget samples, within the same budget; on the real world the demo's
settings, the smallest mask along the trained gates that meets it; fixed coefficients on the people
world), then the frozen mask is scored with the world's metrics (and the
paper's utility benchmarks with ``--utility DIR``). The full-model mask's per-layer muted counts show
which layers NeuMuter chose when it could choose any.

    python recipes/layer_selection_study.py --utility ../shared/data/knowledge-unlearning/validation_data \\
        --out results/layer-study-smollm2
    python recipes/layer_selection_study.py --world people --specs "all;0-1;1-2;2-3;0;3" --out layer-study/
    python recipes/layer_selection_study.py --world extraction --extraction-data ../shared/data/knowledge-unlearning \
        --out results/layer-study-extraction

Layers are 0-based (the paper's blocks 2-8 of GPT-Neo 125M are "1-7"). The readout searches up to 5% of the
GATED neurons, so a range of few layers may be unable to meet the rule: its row then says so (``met``) and
shows the closest mask.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from neumuter_interv.architectures import describe_layers, num_layers, parse_layers
from neumuter_interv.commands.world_options import world_settings
from neumuter_interv.comparison import ComparisonConfig
from neumuter_interv.demo import DemoConfig, demo_inputs, prepare_world
from neumuter_interv.errors import run_script
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.methods.neumuter.config import FORGET_LOSSES
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table, plot_grouped_bars, plot_muted_per_layer
from neumuter_interv.utility import UTILITY_COLUMNS, UtilityConfig
from neumuter_interv.worlds import public_scores
from neumuter_interv.worlds.registry import WORLDS, add_world_arguments, world_spec

COLUMNS = [("forget_ma", "forget MA"), ("forget_el10", "forget EL10"), ("forgotten_fraction", "forgotten"),
           ("other_copies_ma", "other copies MA"), ("retain_ma", "retain MA"), ("heldout_ma", "held-out MA"),
           ("heldout_ppl", "general PPL"), *UTILITY_COLUMNS]


def study_config(world: str, size: str, utility: str | None, epochs: int | None, kl_weight: float | None,
                 sparsity_weight: float | None, settings: Any = None,
                 forget_loss: str | None = None) -> tuple[DemoConfig, NeuMuterConfig, str]:
    """The world's settings as its comparison scores it (the real world in bf16 to fit a CPU budget; ``settings``:
    the world's own, from its options), NeuMuter's (the demo's, unless the world's ``layer_study`` sets its own)
    and the world's default specs."""
    study = world_spec(world).layer_study(size)
    config = ComparisonConfig.for_world(world, size, settings, utility=UtilityConfig(utility) if utility else None).demo
    for name, value in study.get("demo", {}).items():
        setattr(config, name, value)
    neumuter = study.get("neumuter", config.neumuter)
    if epochs is not None:
        config.schedule.stage_epochs = epochs  # the budget under the stopping rule
    overrides = {"kl_weight": kl_weight, "sparsity_weight": sparsity_weight, "forget_loss": forget_loss}
    neumuter = NeuMuterConfig.from_dict({**neumuter.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    return config, neumuter, study["specs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=[name for name, spec in WORLDS.items() if spec.layer_study], default="real")
    add_world_arguments(parser)
    parser.add_argument("--specs", help="layer specs separated by ';' (a spec may hold commas: \"all;1-7;10-16,21\"); "
                                        "default: the world's")
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--utility", metavar="DIR", help="also score the paper's utility benchmarks from DIR")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--kl-weight", type=float)
    parser.add_argument("--sparsity-weight", type=float)
    parser.add_argument("--forget-loss", choices=FORGET_LOSSES, help="NeuMuter's forget term (default: the preset's)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    config, neumuter, default_specs = study_config(args.world, args.size, args.utility, args.epochs, args.kl_weight,
                                                   args.sparsity_weight, world_settings(args), args.forget_loss)
    config.check()
    check_writable(args.out, args.overwrite, demo_inputs(config))
    start = time.perf_counter()
    world = prepare_world(config)
    neighbours = world.neighbours(world.forget_texts, neumuter.neighbours_per_sample, neumuter.replacement_ratio,
                                  neumuter.seed)
    results = {"world": world.describe(), "original": public_scores(world.original),
               "settings": {"neumuter": neumuter.to_dict(), "world": config.world}, "specs": {}}
    total_layers = num_layers(world.load_model())
    rows, muted_groups = [], {}
    for spec in (args.specs or default_specs).split(";"):
        layers = parse_layers(spec, total_layers)
        run_config = NeuMuterConfig.from_dict({**neumuter.to_dict(), "layers": layers, "progress": False})
        run = NeuMuter(run_config, stop_when=world.criterion, schedule=config.schedule, log=lambda message: None).run(
            world.load_model(), world.tokenizer, world.forget_texts, neighbours)
        scores = public_scores(world.evaluate(run.frozen))
        per_layer = run.selection.per_layer_counts()
        results["specs"][spec] = {"layers": layers, "met": run.calibration["met"],
                                  "neurons_muted": run.selection.neurons_muted,
                                  "neurons_muted_fraction": run.selection.neurons_muted_fraction,
                                  "muted_per_layer": per_layer, "unlearning_seconds": run.record.seconds, **scores}
        rows.append([describe_layers(layers), "yes" if run.calibration["met"] else "**no**", run.selection.neurons_muted,
                     *(scores.get(key) for key, _ in COLUMNS if key in world.original)])
        muted_groups[spec] = {"forget MA drop": world.original["forget_ma"] - scores["forget_ma"],
                              "retain MA drop": world.original.get("retain_ma", 0.0) - scores.get("retain_ma", 0.0)}
        print(f"{spec}: {rows[-1]}", flush=True)
    shown = [(key, header) for key, header in COLUMNS if key in world.original]
    table = markdown_table(["layers", "met", "muted", *(h for _, h in shown)],
                           [["original", "", 0, *(world.original.get(key) for key, _ in shown)], *rows])
    full = max(results["specs"], key=lambda spec: len(results["specs"][spec]["layers"]))
    chosen = results["specs"][full]["muted_per_layer"]
    results["seconds"] = time.perf_counter() - start
    budget = NeuMuter(neumuter, schedule=config.schedule, stop_when=world.criterion).budget()
    report = "\n\n".join([
        f"# Layer selection study (cf. Table 3 of Hou et al., 2025) on the {args.world} world",
        f"World: {results['world']}. NeuMuter until Eq. 17 holds ({budget}), lr "
        f"{neumuter.learning_rate}, KL weight {neumuter.kl_weight}, L0 weight {neumuter.sparsity_weight}, readout "
        f"{neumuter.selection}; `met` says whether a spec reached the rule; layers 0-based. "
        f"{results['seconds'] / 60:.1f} minutes in all.",
        table,
        f"Where the widest mask ({describe_layers(results['specs'][full]['layers'])}) put its "
        f"{results['specs'][full]['neurons_muted']} muted neurons, per layer (0-based): "
        + ", ".join(f"{layer}: {count}" for layer, count in sorted(chosen.items()) if count) + ".",
        "`muted_per_layer.png`: that mask per layer; `drops.png`: forget and retain MA drop per spec.",
    ]) + "\n"
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "layer_study.json", results)
        (staging / "layer_study.md").write_text(report)
        width = run.selection.ffn_width
        plot_muted_per_layer(chosen, width, staging / "muted_per_layer.png",
                             f"Muted FFN neurons per layer, mask over {describe_layers(results['specs'][full]['layers'])}")
        plot_grouped_bars(muted_groups, staging / "drops.png", "MA drop (original - after)",
                          "Forgetting and collateral loss per masked range")
    print(report)


if __name__ == "__main__":
    run_script(main)
