"""How do NeuMuter's settings trade forgetting for specificity on the real model? (README, "Making NeuMuter
forget on a real model")

Trains the gates on the real-model world (SmolLM2-135M, the demo's forget windows and self-neighbours)
with one setting, and every ``--check-every`` epochs reads the mask out three ways (the official
threshold rule, the lowest 0.5% and the lowest 1% with their trained values) and scores each by MA on
the forget windows, other copies of the licence, 16 retain-memorized windows and every 4th held-out
window (``f0.005``, ``f0.01``: the lowest-gate readouts; ``low``: gates under the official threshold;
``sec``: seconds since training began, checks included). One setting per run; each writes
``<out>/<name>.json``.

    python recipes/real_model_sweep.py --name lr0.3-kl5 --set learning_rate=0.3 kl_weight=5 --epochs 24 \\
        --check-every 8 --out results/real-model-sweep
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from neumuter_interv import metrics
from neumuter_interv.data import pad_id_of, tokenize
from neumuter_interv.errors import run_script
from neumuter_interv.intervenable import interventions_by_layer
from neumuter_interv.methods.neumuter import NeuMuterConfig, freeze, localize, select_neurons
from neumuter_interv.worlds import RealWorldConfig, prepare_real_world

READOUTS = {"threshold": {"selection": "threshold"}, "f0.005": {"selection": "fraction", "fraction": 0.005},
            "f0.01": {"selection": "fraction", "fraction": 0.01}}  # official rule; lowest 0.5% and 1%


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="NeuMuterConfig fields over the demo's real-model settings; also ratio= and k= "
                             "(neighbours)")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--check-every", type=int, default=8)
    parser.add_argument("--out", default="results/real-model-sweep")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    ratio, k = overrides.pop("ratio", 0.5), overrides.pop("k", 1)
    config = NeuMuterConfig.real_model(**{"epochs": args.epochs, "selection": "threshold", "progress": False,
                                          **overrides})

    world = prepare_real_world(RealWorldConfig(), progress=False, log=lambda message: None)
    tokenizer = world.tokenizer
    neighbours = world.neighbours(world.forget_texts, k, ratio, config.seed)
    model = world.load_model()
    groups = {"forget": world.forget_texts, "copies": world.data.ma_groups["other_copies"],
              "retain": world.retain_texts[:16], "heldout": list(world.data.heldout_texts)[::4]}

    def scores(scored_model) -> dict:
        return {name: round(float(metrics.memorization_accuracy(scored_model, tokenizer, texts, batch_size=16).mean()), 4)
                for name, texts in groups.items()}

    result = {"name": args.name, "config": config.to_dict(), "neighbours": {"ratio": ratio, "k": k},
              "before": scores(model), "checks": []}
    print(args.name, "before", result["before"], flush=True)
    start = time.perf_counter()

    def check(epoch, record, pv_model):
        if epoch % args.check_every:
            return False
        gates = {layer: gate.log_alpha.detach() for layer, gate in interventions_by_layer(pv_model).items()}
        entry = {"epoch": epoch, "sec": round(time.perf_counter() - start), "ce": round(record["forget_ce"], 2),
                 "kl": round(record["kl"], 4), "low": record["below_threshold"]}
        for readout, rule in READOUTS.items():
            selection = select_neurons(model, gates, config.hard_concrete, replace(config, **rule))
            entry[readout] = ({"muted": round(selection.neurons_muted_fraction, 4), **scores(freeze(model, selection))}
                              if selection.neurons_muted else None)
        result["checks"].append(entry)
        print(args.name, json.dumps(entry), flush=True)
        return False

    localize(model, tokenize(tokenizer, world.forget_texts), tokenize(tokenizer, neighbours), config,
             pad_id_of(tokenizer), check, log=lambda message: None)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_script(main)
