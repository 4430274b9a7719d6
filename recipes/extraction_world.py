"""How much the extraction world memorized before anyone unlearns (issue 25): build it (or read it from the
cache) and score the continued-pretrained model, its retrain oracle and the pretrained base the same way,
next to the paper's GPT-Neo 125M (Table 2, "Original": EL10 33.81%, MA 78.64%).

    python recipes/extraction_world.py --extraction-data ../shared/data/knowledge-unlearning \\
        --out results/extraction-world/ [--forget-file lm_extraction_32_0.csv] [--size tiny --extraction-base DIR]

Writes ``memorization.json`` and ``memorization.md``: forget MA and EL10, verbatim extraction of 48 tokens from
a 32-token prefix (``--prefix-tokens``, ``--suffix-tokens``), retain-memorized MA, held-out MA (the Eq. 17
threshold), general-text perplexity and the oracle's forget quality, with each model's build time.
"""

from __future__ import annotations

import argparse
import json
import time

from neumuter_interv.errors import run_script
from neumuter_interv.lm import autocast
from neumuter_interv.loading import load_causal_lm
from neumuter_interv.metrics import suffix_extraction
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.paper_results import TABLE_2_GPT_NEO_125M
from neumuter_interv.report import markdown_table
from neumuter_interv.validation import check_number
from neumuter_interv.worlds import ExtractionWorldConfig, prepare_extraction_world, public_scores
from neumuter_interv.worlds.finetuned import load_base

PAPER_GPT_NEO_125M = {key: TABLE_2_GPT_NEO_125M.rows["original"][key] for key in ("forget_el10", "forget_ma")}
COLUMNS = (("forget MA", "forget_ma"), ("forget EL10", "forget_el10"), ("suffix tokens extracted", "suffix_accuracy"),
           ("suffixes extracted verbatim", "suffix_exact"), ("retain-memorized MA", "retain_ma"),
           ("held-out MA", "heldout_ma"), ("general PPL", "heldout_ppl"), ("forget quality", "forget_quality"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extraction-data", required=True, metavar="DIR")
    parser.add_argument("--forget-file")
    parser.add_argument("--size", choices=["default", "tiny"], default="default")
    parser.add_argument("--extraction-base", metavar="MODEL")
    parser.add_argument("--prefix-tokens", type=int, default=32, help="extraction test: the prompt's tokens")
    parser.add_argument("--suffix-tokens", type=int, default=48, help="extraction test: the tokens to reproduce")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    chosen = {"forget_file": args.forget_file} if args.forget_file else {}
    config = (ExtractionWorldConfig.tiny(args.extraction_base, args.extraction_data, **chosen) if args.size == "tiny"
              else ExtractionWorldConfig(data_dir=args.extraction_data, base=args.extraction_base, **chosen))
    for flag, value in (("--prefix-tokens", args.prefix_tokens), ("--suffix-tokens", args.suffix_tokens)):
        check_number(flag, value, minimum=1, integer=True)  # before the world's build, not after
    check_writable(args.out, args.overwrite, {"--extraction-data": args.extraction_data})
    start = time.perf_counter()
    world = prepare_extraction_world(config)
    base, _, _ = load_base(config.base, config.gguf_file, world.root.parent.parent)
    rows = {"original": public_scores(world.original), "oracle": public_scores(world.oracle),
            "base": public_scores(world.evaluate(base))}
    for name, model in (("original", world.load_model()), ("oracle", load_causal_lm(str(world.oracle_dir))[0]),
                        ("base", base)):
        with autocast(config.dtype, next(model.parameters()).device):
            shares = suffix_extraction(model, world.tokenizer, world.forget_texts, prefix_tokens=args.prefix_tokens,
                                       suffix_tokens=args.suffix_tokens, batch_size=config.score_batch_size)
        rows[name].update(suffix_accuracy=float(shares.mean()), suffix_exact=float((shares == 1).float().mean()))
    builds = {name: json.loads((world.root / name / "training.json").read_text()) for name in ("model", "oracle")}
    results = {"world": world.describe(), "build": world.root.name, "thresholds": world.thresholds, "models": rows,
               "extraction_test": {"prefix_tokens": args.prefix_tokens, "suffix_tokens": args.suffix_tokens},
               "training": builds, "paper_gpt_neo_125m_original": PAPER_GPT_NEO_125M,
               "seconds": round(time.perf_counter() - start, 1)}
    table = markdown_table(["model", *(label for label, _ in COLUMNS)],
                           [[name, *(scores.get(key) for _, key in COLUMNS)] for name, scores in rows.items()]
                           + [["paper: GPT-Neo 125M original", *(PAPER_GPT_NEO_125M.get(key) for _, key in COLUMNS)]])
    report = (f"# The extraction world's memorization before unlearning\n\n{world.describe()}.\n\n"
              f"Eq. 17 thresholds (held-out Pile rows): MA {world.thresholds['ma']:.4f}, EL10 "
              f"{world.thresholds['el10']:.4f} (every {config.el_prefix_stride}th prefix). Extraction: the forget "
              f"samples' greedy continuation of their first {args.prefix_tokens} tokens against the next "
              f"{args.suffix_tokens} (`suffix tokens extracted`: the share of positions reproduced; "
              f"`verbatim`: the share of samples whose {args.suffix_tokens} tokens all are).\n\n{table}\n\nBuilt in "
              + ", ".join(f"{name} {record['seconds']:.0f} s ({record['sequences']} sequences)"
                          for name, record in builds.items())
              + f" (this command: {results['seconds']:.0f} s, cached models not rebuilt).\n")
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "memorization.json", results)
        (staging / "memorization.md").write_text(report)
    print(report)


if __name__ == "__main__":
    run_script(main)
