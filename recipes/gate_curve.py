"""The operating points of a saved NeuMuter run's gates at chosen muted shares, on the real world (the demo's).

    python recipes/gate_curve.py --run results/specificity-smollm2-distill/distill/seed-0/run \
        --fractions 0.005,0.01,0.0179 --out results/specificity-smollm2-distill-curve

For each share of the model's FFN neurons, mutes that many neurons along the gates' ranking (lowest closing
probability first, trained values kept) and scores the mask as the demo's curve does (``operating_curve``:
teacher-forced MA of every group, general PPL, the share of forget samples meeting Eq. 17), so that two runs
(two losses, two seeds) compare at the same muted share, e.g. issue 24's 1% target, where each run's own
readout stopped at a different one. Writes ``curve.json`` and ``curve.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from neumuter_interv.architectures import ffn_width, num_layers
from neumuter_interv.demo import DemoConfig, prepare_world
from neumuter_interv.errors import NeuMuterError, run_script
from neumuter_interv.methods.neumuter.method import GATES_FILE, load_gates
from neumuter_interv.operating_curve import operating_curve
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table

COLUMNS = ("neurons_muted_fraction", "forget_ma", "forgotten_fraction", "other_copies_ma", "retain_ma",
           "retain_licences_ma", "retain_other_ma", "heldout_ma", "heldout_ppl")


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = [float(value) for value in text.split(",")]
    except ValueError:
        raise NeuMuterError(f"--fractions must be numbers separated by commas, got {text!r}") from None
    bad = [value for value in fractions if not 0 < value <= 1]
    if bad:
        raise NeuMuterError(f"--fractions are shares of the FFN neurons in (0, 1], got {bad[0]}")
    return fractions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a NeuMuter run directory (gates.safetensors, config.json)")
    parser.add_argument("--fractions", default="0.005,0.01", help="comma-separated shares of the model's FFN neurons")
    parser.add_argument("--size", default="default", choices=["default", "tiny"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    fractions = parse_fractions(args.fractions)
    run = Path(args.run)
    if not (run / GATES_FILE).is_file() or not (run / "config.json").is_file():
        raise NeuMuterError(f"{run} is not a NeuMuter run with trained gates (needs {GATES_FILE} and config.json)")
    check_writable(args.out, args.overwrite, {"--run": args.run})
    world = prepare_world(DemoConfig.for_world("real", args.size), progress=False)
    model = world.load_model()
    log_alpha, neumuter = load_gates(run, model)
    if neumuter.ranking == "contrastive":
        raise NeuMuterError(f"{run} ranks its neurons contrastively, whose discount is not saved with the gates")
    neurons = num_layers(model) * ffn_width(model)
    counts = sorted({math.ceil(fraction * neurons) for fraction in fractions})
    points = operating_curve(model, world.tokenizer, log_alpha, neumuter.hard_concrete, world.data, world.thresholds,
                             counts, ranking=neumuter.ranking)
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "curve.json", {"run": str(run), "world": "real", "thresholds": world.thresholds,
                                            "neumuter": neumuter.to_dict(), "points": points})
        rows = [[point.get(key, "-") for key in COLUMNS] for point in points]
        (staging / "curve.md").write_text(
            f"# Operating points of {run}\n\nOn the real world; Eq. 17 thresholds MA "
            f"{world.thresholds['ma']:.4f}, EL10 {world.thresholds['el10']:.4f}. Regenerate: `python recipes/gate_curve.py "
            f"--run {run} --fractions {args.fractions} --out {args.out}`.\n\n" + markdown_table(list(COLUMNS), rows) + "\n",
            encoding="utf-8")
    print(f"wrote {args.out}/ (curve.json, curve.md)")


if __name__ == "__main__":
    run_script(main)
