"""Does NeuMuter meet the demo's targets on larger testbed worlds? The scale study of issue 3 (needs a GPU).

On the default world (4 x 128, FFN 512, 2 CPU cores) the demo forgets no one at 3-5% of neurons muted,
and the separability study finds no forget-specific neurons in any small world. The testbed findings
saw some forget-specific attribution appear at 18M parameters. This recipe runs the demo unchanged
(``run_demo``: MLM neighbours, Eq. 17 stopping, the coefficient schedule) on worlds that differ from the
default only in model size, and reports for each:

- the demo's three targets (forgotten share, held-out PPL change, share of neurons muted) and the
  coefficients the schedule ended with;
- forget / retain MA before, after and for the retrain oracle;
- the forget/retain attribution ratio of the original model (``methods.attribution.attribution_ratio``), next to
  its null between two halves of the retain people;
- two masks of ``BUDGET`` (the target's 2%) of the neurons chosen by attribution: the highest forget
  attribution (no retain data, as NeuMuter) and the highest forget/retain ratio (uses the retain people):
  whether ANY 2% mask forgets the forget people at that size.

    python recipes/scale_study.py --out results/scale-study/ --device cuda [--worlds default,256x6-ffn4096]

Writes ``scale_study.json``, ``scale_study.md`` and ``scale.png`` to ``--out`` (each world's demo
directory goes to ``--work``); results are written after every world, so a cut-off run keeps what it did.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from neumuter_interv.demo import DemoConfig, run_demo
from neumuter_interv.errors import run_script
from neumuter_interv.methods.attribution import attribution_ratio, neuron_attribution, top_fraction_selection
from neumuter_interv.methods.neumuter.selection import freeze
from neumuter_interv.output import check_writable, output_directory, read_kept_results, write_json
from neumuter_interv.report import markdown_table, plot_grouped_bars
from neumuter_interv.testbed import TestbedConfig
from neumuter_interv.worlds import prepare_people_world, public_scores

# The study ran (results/scale-study/) on the default world of its time, pinned here so that it reruns the
# same worlds: 8 copies of each person, 40% general text (today's default: 9 copies, 35%).
BASE = TestbedConfig(repeats=8, general_share=0.4)
# Changes to that world; hidden size 256 and up get a lower learning rate (at the default 2e-3 a
# 4 x 256 model memorized nothing: forget MA 0.33 against 0.25 on unseen people). "-inject" builds the
# model as TOFU does: the oracle (pretrained without the forget people), then 5 epochs on them with replay.
WORLDS = {
    "default": {},
    "ffn-2048": {"ffn_size": 2048},
    "256x4-ffn1024": {"hidden_size": 256, "ffn_size": 1024, "lr": 1e-3},
    "256x6-ffn4096": {"hidden_size": 256, "n_layers": 6, "ffn_size": 4096, "lr": 1e-3},
    "256x6-ffn4096-inject": {"hidden_size": 256, "n_layers": 6, "ffn_size": 4096, "lr": 1e-3, "inject_epochs": 5},
    "512x8-ffn8192": {"hidden_size": 512, "n_heads": 8, "n_layers": 8, "ffn_size": 8192, "lr": 5e-4},
}
BUDGET = 0.02


def study_world(name: str, overrides: dict, work: Path, device: str) -> dict:
    start = time.perf_counter()
    config = DemoConfig.for_world("people", settings=BASE.with_(**overrides), device=device)
    summary = run_demo(work / name, config, overwrite=True, progress=False, log=lambda message: print(f"  [{name}] {message}", flush=True))
    world = prepare_people_world(config.world_settings, el_prefix_stride=config.el_prefix_stride, progress=False,
                                    log=lambda message: None, device=device)
    testbed, tokenizer = world.testbed, world.tokenizer
    model = testbed.load_model().to(device)
    forget, retain = testbed.forget_texts, testbed.retain_texts
    forget_attribution = neuron_attribution(model, tokenizer, forget)
    ratio = attribution_ratio(forget_attribution, neuron_attribution(model, tokenizer, retain))
    null = attribution_ratio(*(neuron_attribution(model, tokenizer, half)
                               for half in (retain[:len(retain) // 2], retain[len(retain) // 2:])))
    masks = {}
    for mask, scores in (("forget_attribution", forget_attribution), ("ratio", ratio.per_layer)):
        selection = top_fraction_selection(model, scores, BUDGET)
        after = world.evaluate(freeze(testbed.load_model().to(device), selection))
        masks[mask] = {"neurons_muted_fraction": selection.neurons_muted_fraction, **public_scores(after)}
    return {
        "overrides": overrides,
        "testbed": asdict(testbed.config),
        "parameters": testbed.manifest["parameters"]["model"],
        "build_seconds": testbed.manifest["build_seconds"],
        "thresholds": summary["thresholds"],
        "before": summary["before"], "after": summary["after"], "oracle": summary["oracle"],
        "neurons_muted_fraction": summary["neurons_muted_fraction"],
        "targets": summary["targets"],
        "calibration": {key: summary["calibration"][key] for key in ("met", "final_kl_weight", "final_sparsity_weight")},
        "unlearning_seconds": summary["unlearning_seconds"],
        "attribution_ratio": ratio.summary(),
        "null_attribution_ratio": null.summary(),
        "budget_masks": masks,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _ma(scores: dict) -> str:
    return f"{scores['forget_ma']:.3f} / {scores['retain_ma']:.3f}"


def report(results: dict, device: str) -> str:
    rows = []
    for name, r in results.items():
        targets = r["targets"]
        rows.append([
            name, f"{r['parameters'] / 1e6:.1f}M", f"{r['thresholds']['ma']:.3f}", _ma(r["before"]), _ma(r["oracle"]),
            _ma(r["after"]),
            f"{targets['forgotten_fraction']['value']:.2f}", f"{100 * targets['heldout_ppl_increase']['value']:+.1f}%",
            f"{100 * targets['neurons_muted_fraction']['value']:.2f}%",
            f"{r['calibration']['final_kl_weight']:g} / {r['calibration']['final_sparsity_weight']:g}",
            *(f"{_ma(r['budget_masks'][mask])}, {r['budget_masks'][mask]['forgotten_fraction']:.2f}"
              for mask in ("forget_attribution", "ratio")),
            f"{r['attribution_ratio']['q99.9']:.2f} / {r['null_attribution_ratio']['q99.9']:.2f}",
            f"{r['seconds']:.0f} s",
        ])
    header = ["world", "parameters", "MA threshold (unseen people)", "MA before: forget / retain",
              "oracle MA", "NeuMuter MA after", "forgotten (target >= 0.9)", "PPL change (<= +10%)",
              "muted (<= 2%)", "final KL / L0 weight", f"top forget attribution {BUDGET:.0%}: MA, forgotten",
              f"top forget/retain ratio {BUDGET:.0%}: MA, forgotten", "attribution ratio q99.9 / null", "time"]
    return "\n\n".join([
        "# Scale study: the demo on larger testbed worlds",
        f"Each world is the default testbed with the model size changed (worlds built on {device}); the demo "
        "runs unchanged on it (MLM neighbours k=1 r=1, Eq. 17 stopping, the coefficient schedule). MA cells: "
        "forget / retain people. 'forgotten' is the share of forget people meeting Eq. 17. The attribution "
        "masks mute the same 2% of FFN neurons as the target allows, ranked by the original model's "
        "|activation x gradient| on the forget people (alone, or over the retain people's); the attribution "
        "ratio's null compares two halves of the retain people.",
        markdown_table(header, rows),
    ]) + "\n"


def write_results(out: str | Path, results: dict, device: str) -> None:
    """``scale_study.json``, ``scale_study.md`` and ``scale.png``, worlds ordered by model size."""
    results = dict(sorted(results.items(), key=lambda item: item[1]["parameters"]))
    with output_directory(out, overwrite=True) as staging:
        write_json(staging / "scale_study.json", {"device": device, "budget": BUDGET, "worlds": results})
        (staging / "scale_study.md").write_text(report(results, device))
        plot_grouped_bars({f"{world} ({r['parameters'] / 1e6:.0f}M)": {
            "forget MA before": r["before"]["forget_ma"], "forget MA after": r["after"]["forget_ma"],
            "retain MA after": r["after"]["retain_ma"], "Eq. 17 MA threshold": r["thresholds"]["ma"]}
            for world, r in results.items()},
            staging / "scale.png", "memorization accuracy",
            "NeuMuter (demo settings) on larger worlds: nobody forgotten")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default=",".join(WORLDS), help=f"comma-separated, from {', '.join(WORLDS)}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", help="where each world's demo directory goes (default: <out>-work)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--keep", help="scale_study.json of an earlier run: its worlds are reported too, not re-run "
                                       "(the study spans several calls of a time-limited GPU machine)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    names = args.worlds.split(",")
    unknown = [name for name in names if name not in WORLDS]
    if unknown:
        parser.error(f"unknown world(s) {', '.join(unknown)}: choose from {', '.join(WORLDS)}")
    check_writable(args.out, args.overwrite, {"--keep": args.keep})  # never replace the results it reads
    work = Path(args.work or f"{args.out.rstrip('/')}-work")
    results = read_kept_results(args.keep, "worlds")
    for number, name in enumerate(names, start=1):
        print(f"[{number}/{len(names)}] {name}: {WORLDS[name] or 'the default world'}", flush=True)
        results[name] = result = study_world(name, WORLDS[name], work, args.device)
        print(f"  [{name}] forgotten {result['targets']['forgotten_fraction']['value']:.2f}, muted "
              f"{100 * result['neurons_muted_fraction']:.2f}%, MA after {_ma(result['after'])}, ratio q99.9 "
              f"{result['attribution_ratio']['q99.9']:.2f} (null {result['null_attribution_ratio']['q99.9']:.2f}), "
              f"{result['seconds']:.0f} s", flush=True)
        write_results(args.out, results, args.device)  # after every world: a cut-off run keeps its results
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
