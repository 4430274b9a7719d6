"""How much the extraction world memorized before anyone unlearns (issue 25): build it (or read it from the
cache) and score the continued-pretrained model, its retrain oracle and the pretrained base the same way,
next to the paper's GPT-Neo 125M (Table 2, "Original": EL10 33.81%, MA 78.64%).

    python recipes/extraction_world.py --extraction-data ../shared/data/knowledge-unlearning \\
        --out results/extraction-world/ [--forget-file lm_extraction_32_0.csv] [--size tiny --extraction-base DIR]

Writes ``memorization.json`` and ``memorization.md``: forget MA and EL10, retain-memorized MA, held-out MA (the
Eq. 17 threshold), general-text perplexity and the oracle's forget quality, with each model's build time.
"""

from __future__ import annotations

import argparse
import json
import time

from neumuter_interv.errors import run_script
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table
from neumuter_interv.worlds import ExtractionWorldConfig, prepare_extraction_world, public_scores
from neumuter_interv.worlds.finetuned import load_base

PAPER_GPT_NEO_125M = {"forget_el10": 0.3381, "forget_ma": 0.7864}  # Table 2, "Original" (means over 5 runs)
COLUMNS = (("forget MA", "forget_ma"), ("forget EL10", "forget_el10"), ("retain-memorized MA", "retain_ma"),
           ("held-out MA", "heldout_ma"), ("general PPL", "heldout_ppl"), ("forget quality", "forget_quality"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extraction-data", required=True, metavar="DIR")
    parser.add_argument("--forget-file")
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--extraction-base", metavar="MODEL")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    chosen = {"forget_file": args.forget_file} if args.forget_file else {}
    config = (ExtractionWorldConfig.tiny(args.extraction_base, args.extraction_data, **chosen) if args.size == "tiny"
              else ExtractionWorldConfig(data_dir=args.extraction_data, base=args.extraction_base, **chosen))
    check_writable(args.out, args.overwrite, {"--extraction-data": args.extraction_data})
    start = time.perf_counter()
    world = prepare_extraction_world(config)
    base, _, _ = load_base(config.base, config.gguf_file, world.root.parent.parent)
    rows = {"original": public_scores(world.original), "oracle": public_scores(world.oracle),
            "base": public_scores(world.evaluate(base))}
    builds = {name: json.loads((world.root / name / "training.json").read_text()) for name in ("model", "oracle")}
    results = {"world": world.describe(), "build": world.root.name, "thresholds": world.thresholds, "models": rows,
               "training": builds, "paper_gpt_neo_125m_original": PAPER_GPT_NEO_125M,
               "seconds": round(time.perf_counter() - start, 1)}
    table = markdown_table(["model", *(label for label, _ in COLUMNS)],
                           [[name, *(scores.get(key) for _, key in COLUMNS)] for name, scores in rows.items()]
                           + [["paper: GPT-Neo 125M original", *(PAPER_GPT_NEO_125M.get(key) for _, key in COLUMNS)]])
    report = (f"# The extraction world's memorization before unlearning\n\n{world.describe()}.\n\n"
              f"Eq. 17 thresholds (held-out Pile rows): MA {world.thresholds['ma']:.4f}, EL10 "
              f"{world.thresholds['el10']:.4f}.\n\n{table}\n\nBuilt in "
              + ", ".join(f"{name} {record['seconds']:.0f} s ({record['sequences']} sequences)"
                          for name, record in builds.items())
              + f" (this command: {results['seconds']:.0f} s, cached models not rebuilt).\n")
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "memorization.json", results)
        (staging / "memorization.md").write_text(report)
    print(report)


if __name__ == "__main__":
    run_script(main)
