"""The demo's headline numbers over seeds, so that a reader knows which differences are noise.

    python recipes/demo_seeds.py --seeds 0,1,2 --out results/demo-smollm2-seeds
    python recipes/demo_seeds.py --seeds 0,1,2 --anchors 1 --out results/demo-smollm2-anchors-seeds

Runs the demo (``run_demo`` on the default real world, NeuMuter under the stopping rule) once per seed
(NeuMuter's gate noise, batch order and self-written neighbours; the world is the packaged one and does not
move), without the operating-point curve and the attribution baseline, which the demo itself shows for
seed 0. Writes each seed's demo under ``seed-N/``, and ``seeds.json`` / ``seeds.md``: per headline metric
its value per seed, mean, standard deviation and range.
"""

from __future__ import annotations

import argparse
import statistics
import time

from neumuter_interv.demo import DemoConfig, run_demo
from neumuter_interv.errors import NeuMuterError, run_script
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table

HEADLINE = [("forget_ma", "forget MA"), ("forgotten_fraction", "forgotten"), ("other_copies_ma", "other copies MA"),
            ("retain_ma", "retain MA"), ("retain_licences_ma", "retain: licences"), ("retain_other_ma", "retain: other"),
            ("heldout_ma", "held-out MA"), ("heldout_ppl", "general PPL")]

HEADLINE_ROWS = HEADLINE + [("neurons_muted_fraction", "FFN neurons muted")]


def spread_over_seeds(runs: dict) -> dict:
    """Per headline metric of ``run_demo`` summaries (one per seed): the values, mean, stdev, min and max."""
    spread = {}
    for key, _ in HEADLINE_ROWS:
        values = [run["neurons_muted_fraction"] if key == "neurons_muted_fraction" else run["after"].get(key)
                  for run in runs.values()]
        if any(value is None for value in values):
            continue
        spread[key] = {"values": values, "mean": statistics.fmean(values),
                       "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "min": min(values), "max": max(values)}
    return spread


def parse_run_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments every seeds recipe shares (``--size``, ``--out``, ``--overwrite``) added and parsed;
    ``--seeds`` (the parser's own, with its default) comes back as a list of integers."""
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise NeuMuterError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--anchors", type=int, default=0, help="NeuMuter's KL anchors per forget sample (demo --anchors)")
    args = parse_run_arguments(parser)
    seeds = args.seeds
    configs = {}
    for seed in seeds:
        config = DemoConfig.for_world("real", args.size)
        config.neumuter.seed, config.neumuter.anchors_per_sample = seed, args.anchors
        config.curve_points, config.attribution_baseline = 0, False
        config.check()
        configs[seed] = config
    check_writable(args.out, args.overwrite)
    start = time.perf_counter()
    with output_directory(args.out, args.overwrite) as staging:
        runs = {seed: run_demo(staging / f"seed-{seed}", config, progress=False) for seed, config in configs.items()}
        before = runs[seeds[0]]["before"]
        spread = spread_over_seeds(runs)
        rows = [[label, before.get(key, "-"), *spread[key]["values"], spread[key]["mean"], spread[key]["stdev"],
                 spread[key]["max"] - spread[key]["min"]] for key, label in HEADLINE_ROWS if key in spread]
        met = {seed: run["calibration"]["met"] for seed, run in runs.items()}
        results = {"seeds": seeds, "anchors_per_sample": args.anchors, "original": before, "spread": spread,
                   "met": met, "seconds": time.perf_counter() - start}
        report = "\n\n".join([
            "# The demo over seeds (NeuMuter under the stopping rule, real world)",
            f"Seeds {', '.join(map(str, seeds))}; anchors per forget sample {args.anchors}. Eq. 17 met: "
            + ", ".join(f"seed {seed}: {'yes' if ok else 'no'}" for seed, ok in met.items())
            + f". {results['seconds'] / 60:.1f} minutes in all.",
            markdown_table(["metric", "original", *(f"seed {s}" for s in seeds), "mean", "stdev", "range"], rows),
        ]) + "\n"
        write_json(staging / "seeds.json", results)
        (staging / "seeds.md").write_text(report)
    print(report)


if __name__ == "__main__":
    run_script(main)
