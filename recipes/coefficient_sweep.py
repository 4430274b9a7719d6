"""Why does the demo miss its targets? NeuMuter at fixed coefficients, neighbour sources and selection rules.

Each row trains the gates once with fixed weights (no schedule, no stopping rule), then freezes the mask
with the official threshold rule and, where asked, with "the lowest-gated x% of neurons" instead, so that
one can read off what share of neurons has to be muted before the forget people meet Eq. 17, and what
that costs the retain people and the held-out PPL. Neighbour sources:

* ``mlm``: the testbed's masked LM, r = 1, one token at a time (what the demo uses);
* ``retain``: biographies of retain people: ideal neighbours (same templates, other attributes), a
  diagnostic only, since a practitioner has no retain set;
* ``none``: no KL term.

    python recipes/coefficient_sweep.py --out results/coefficient-sweep
"""

from __future__ import annotations

import argparse
import json

from neumuter_interv.data import pad_id_of, tokenize
from neumuter_interv.errors import run_script
from neumuter_interv.methods.neumuter import NeuMuterConfig
from neumuter_interv.methods.neumuter.localize import localize
from neumuter_interv.methods.neumuter.selection import freeze, select_neurons
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table
from neumuter_interv.testbed import TestbedConfig
from neumuter_interv.worlds import prepare_people_world, public_scores

# (neighbour source, kl_weight, sparsity_weight, extra "lowest x%" selections)
DEFAULT_GRID = [
    ("mlm", 0.2, 0.0, [0.01, 0.02]),
    ("retain", 0.2, 0.0, []),
    ("mlm", 0.1, 0.0, []),
    ("retain", 0.1, 0.0, []),
    ("mlm", 0.2, 1.0, [0.02]),
    ("mlm", 0.5, 0.1, [0.02]),
    ("none", 0.0, 1.0, []),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--grid", type=json.loads, default=DEFAULT_GRID,
                        help='JSON list of [source, kl_weight, sparsity_weight, [fractions]]')
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    check_writable(args.out, args.overwrite)
    world = prepare_people_world(TestbedConfig.tiny() if args.size == "tiny" else TestbedConfig(), el_prefix_stride=4)
    testbed, tokenizer = world.testbed, world.tokenizer
    sources = {
        "mlm": lambda: world.neighbours(testbed.forget_texts, k=1, ratio=1.0),
        "retain": lambda: testbed.retain_texts[:len(testbed.forget_texts)],
        "none": lambda: [],
    }
    original = public_scores(world.original)
    rows = [["original", "", "", "", 0.0, original["forget_ma"], original["forgotten_fraction"], original["retain_ma"],
             original["heldout_ppl"]]]
    results = {"original": original, "oracle": public_scores(world.oracle), "thresholds": world.thresholds,
               "epochs": args.epochs, "runs": []}
    for source, kl_weight, sparsity_weight, fractions in args.grid:
        config = NeuMuterConfig(epochs=args.epochs, kl_weight=kl_weight, sparsity_weight=sparsity_weight, progress=False)
        model = testbed.load_model()
        neighbours = tokenize(tokenizer, sources[source](), what="neighbour") if source != "none" else []
        _, localization = localize(model, tokenize(tokenizer, testbed.forget_texts), neighbours, config,
                                   pad_id_of(tokenizer), log=lambda message: None)
        rules = [("threshold 0.15", config)] + [
            (f"lowest {100 * f:g}%", NeuMuterConfig(selection="fraction", fraction=f)) for f in fractions]
        for rule, rule_config in rules:
            selection = select_neurons(model, localization.log_alpha, localization.params, rule_config)
            scores = public_scores(world.evaluate(freeze(model, selection)))
            results["runs"].append({"neighbours": source, "kl_weight": kl_weight, "sparsity_weight": sparsity_weight,
                                    "selection": rule, "neurons_muted_fraction": selection.neurons_muted_fraction, **scores})
            rows.append([source, kl_weight, sparsity_weight, rule, selection.neurons_muted_fraction, scores["forget_ma"],
                         scores["forgotten_fraction"], scores["retain_ma"], scores["heldout_ppl"]])
            print(rows[-1], flush=True)
    table = markdown_table(["neighbours", "KL", "L0", "selection", "muted", "forget MA", "forgotten", "retain MA",
                            "held-out PPL"], rows)
    limits = world.thresholds
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "coefficient_sweep.json", results)
        (staging / "coefficient_sweep.md").write_text(
            f"# NeuMuter at fixed coefficients ({args.epochs} epochs, batch 8, {args.size} testbed)\n\n"
            f"Eq. 17 thresholds: MA {limits['ma']:.4f}, EL10 {limits['el10']:.4f}. `forgotten` is the share of forget "
            f"samples meeting Eq. 17.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    run_script(main)
