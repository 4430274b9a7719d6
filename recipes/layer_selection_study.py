"""Which layers to mask? The paper's Table 3 study on the embedded testbed.

For each layer spec, NeuMuter runs with the same fixed coefficients and epochs (no stopping rule, so the
specs are compared at equal effort), then the frozen mask is scored with the demo's metrics.

    python recipes/layer_selection_study.py --specs all,0-1,1-2,2-3,0,3 --out layer-study/

Layers are 0-based (the paper's blocks 2-8 of GPT-Neo 125M are "1-7").
"""

from __future__ import annotations

import argparse

from neumuter_interv.architectures import describe_layers, num_layers, parse_layers
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.output import output_directory, write_json
from neumuter_interv.report import markdown_table
from neumuter_interv.testbed import TestbedConfig
from neumuter_interv.worlds import prepare_people_world, public_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default="all,0-1,1-2,2-3,0,1,2,3")
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--kl-weight", type=float, default=0.3)
    parser.add_argument("--sparsity-weight", type=float, default=0.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    world = prepare_people_world(TestbedConfig.tiny() if args.size == "tiny" else TestbedConfig(), el_prefix_stride=2)
    testbed = world.testbed
    neighbours = world.neighbours(testbed.forget_texts, k=1, ratio=1.0)
    rows, results = [], {"original": public_scores(world.original), "oracle": public_scores(world.oracle)}
    for spec in args.specs.split(","):
        model = testbed.load_model()
        layers = parse_layers(spec, num_layers(model))
        config = NeuMuterConfig(layers=layers, epochs=args.epochs, kl_weight=args.kl_weight,
                                sparsity_weight=args.sparsity_weight, progress=False)
        run = NeuMuter(config, log=lambda message: None).run(model, world.tokenizer, testbed.forget_texts, neighbours)
        scores = public_scores(world.evaluate(run.frozen))
        results[spec] = {"layers": layers, "neurons_muted_fraction": run.selection.neurons_muted_fraction, **scores}
        rows.append([describe_layers(layers), run.selection.neurons_muted_fraction, scores["forget_ma"],
                     scores["forget_el10"], scores["retain_ma"], scores["heldout_ppl"]])
        print(rows[-1])
    table = markdown_table(["layers", "muted", "forget MA", "forget EL10", "retain MA", "held-out PPL"],
                           [["original", 0.0, world.original["forget_ma"], world.original["forget_el10"],
                             world.original["retain_ma"], world.original["heldout_ppl"]], *rows])
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "layer_study.json", results)
        (staging / "layer_study.md").write_text(
            f"# Layer selection study ({args.epochs} epochs, KL {args.kl_weight}, L0 {args.sparsity_weight})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
